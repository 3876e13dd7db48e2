"""`python -m relvit.visualize ckpt_path=<ckpt> [image=...] [output_dir=...]`: pictures of a checkpoint
(relvit.evaluation.visualize)."""
import sys

if __name__ == "__main__":
    from relvit.evaluation.visualize import main

    sys.exit(main(sys.argv[1:]))
