"""`python -m relvit.comparison multirun/<time>`: the RelViT vs scratch table rebuilt from a sweep's jobs
(relvit.evaluation.comparison)."""
import sys

if __name__ == "__main__":
    from relvit.evaluation.comparison import main

    sys.exit(main(sys.argv[1:]))
