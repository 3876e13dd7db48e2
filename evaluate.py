"""Evaluate a checkpoint: `python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt`.

Model and data are rebuilt from the config saved in the checkpoint; new overrides apply on top.
"""
import hydra
from omegaconf import DictConfig

from relvit.cli import exit_on_user_error, log_lightning_once, run_main


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from relvit.evaluation.evaluate import evaluate

    log_lightning_once()
    evaluate(cfg)


if __name__ == "__main__":
    run_main(main)
