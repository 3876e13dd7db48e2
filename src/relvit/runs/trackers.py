"""Experiment trackers beside TensorBoard: Weights & Biases and MLflow, built from ``conf/logger/``.

Both are optional packages (``pip install -e '.[trackers]'``); a config that names one whose
package is missing is refused before any work. A W&B run goes offline when no API key is known or
the service cannot be reached, so a tracker never blocks or fails a run.
"""
from __future__ import annotations

import importlib.util
import logging
import netrc
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from relvit.errors import ConfigError

log = logging.getLogger(__name__)

#: Factory target -> (the package it imports, the extra that installs it).
REQUIRED_PACKAGES = {
    "relvit.runs.trackers.wandb_logger": ("wandb", "wandb"),
    "relvit.runs.trackers.mlflow_logger": ("mlflow", "mlflow"),
}
WANDB_HOST = "api.wandb.ai"


def check_trackers(loggers: Mapping[str, Any]) -> None:
    """Refuse a logger of the ``logger`` group whose package is not installed, naming the install line."""
    for name, node in loggers.items():
        target = node.get("_target_") if isinstance(node, Mapping) else None
        package, extra = REQUIRED_PACKAGES.get(str(target), (None, None))
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"logger={name} is invalid here: it needs the {package} package, which is not installed; "
                f"install it with pip install -e '.[{extra}]' (or '.[trackers]' for W&B and MLflow), "
                "or choose another logger (tensorboard, csv)"
            )


def finish_trackers(failed: bool = False) -> None:
    """Close the W&B run of this process, if one is open (Lightning leaves it open, and the next
    WandbLogger of the process would log into it)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def wandb_credentials() -> bool:
    """Whether an API key is known: WANDB_API_KEY, or the netrc entry that ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_offline() -> bool:
    """WANDB_MODE if set; else offline unless an API key is known and the service answers."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "dryrun", "disabled")
    return not (wandb_credentials() and reachable(WANDB_HOST))


def wandb_logger(save_dir: str, project: str, name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, offline: bool | None = None, log_model: bool = False) -> Logger:
    """Lightning's WandbLogger writing under ``save_dir``/wandb; ``offline=None`` decides: online only
    with an API key and a reachable service (WANDB_MODE, if set, decides instead)."""
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = wandb_offline()
        if offline:
            log.info("wandb: offline (no API key, or %s unreachable); sync later with `wandb sync %s/wandb`", WANDB_HOST, save_dir)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(save_dir=save_dir, project=project, name=name or Path(save_dir).name, group=group,
                       tags=list(tags or []), offline=offline, log_model=log_model)


def mlflow_logger(save_dir: str, experiment_name: str, run_name: str | None = None, tracking_uri: str | None = None,
                  tags: dict[str, Any] | None = None) -> Logger:
    """Lightning's MLFlowLogger; ``tracking_uri=None`` is a local store in ``save_dir``: the runs in
    ``mlflow.db`` (SQLite: MLflow 3 refuses its old directory store) and the pictures in ``mlartifacts/``."""
    from lightning.pytorch.loggers import MLFlowLogger

    local = Path(save_dir).resolve()
    artifacts = None
    if tracking_uri is None:
        local.mkdir(parents=True, exist_ok=True)
        tracking_uri, artifacts = f"sqlite:///{local / 'mlflow.db'}", (local / "mlartifacts").as_uri()
    return MLFlowLogger(experiment_name=experiment_name, run_name=run_name or local.name, tracking_uri=tracking_uri,
                        tags=dict(tags or {}), artifact_location=artifacts)


#: Loggers that keep pictures, by class name (W&B and MLflow are imported only when installed).
IMAGE_LOGGERS = ("TensorBoardLogger", "WandbLogger", "MLFlowLogger")


def keeps_images(logger: Logger) -> bool:
    return type(logger).__name__ in IMAGE_LOGGERS


def write_image(logger: Logger, tag: str, image: torch.Tensor, step: int) -> None:
    """Write ``image`` [3, H, W] in [0, 1] to ``logger`` (one that ``keeps_images``)."""
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(tag, image, global_step=step)
        return
    pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # [H, W, 3] uint8
    tracker: Any = logger  # WandbLogger or MLFlowLogger, whose packages may be absent
    if type(logger).__name__ == "WandbLogger":
        tracker.log_image(key=tag, images=[pixels], step=step)
    else:  # MLflow: one PNG per step among the run's artifacts
        tracker.experiment.log_image(tracker.run_id, pixels, artifact_file=f"{tag}/step_{step:06d}.png")
