"""`python -m relvit.export ckpt_path=<ckpt> [out=<new dir>]`: a checkpoint's backbone as
model.safetensors + config.json (relvit.evaluation.export)."""
import hydra
from omegaconf import DictConfig

from relvit.cli import exit_on_user_error, log_lightning_once, run_main


@hydra.main(version_base="1.3", config_path="../../conf", config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from relvit.evaluation.export import export

    log_lightning_once()
    export(cfg)


if __name__ == "__main__":
    run_main(main)
