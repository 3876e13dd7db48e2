"""`python -m relvit.summary multirun/<time>`: a sweep's summary rebuilt from its jobs (relvit.evaluation.summary)."""
import sys

if __name__ == "__main__":
    from relvit.evaluation.summary import main

    sys.exit(main(sys.argv[1:]))
