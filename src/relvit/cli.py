"""What train.py and evaluate.py run inside Hydra: user errors become one line and exit code 2."""
from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from relvit.checkpoints import UnsafeCheckpointError
from relvit.config_checks import ConfigError
from relvit.data.download import DownloadError, UnsafeArchiveError
from relvit.data.sources.base import DataNotFoundError

log = logging.getLogger("relvit")

USER_ERRORS = (
    ConfigError, DataNotFoundError, DownloadError, UnsafeArchiveError, UnsafeCheckpointError,
    FileNotFoundError, FileExistsError, MissingMandatoryValue,
)


def exit_on_user_error(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Report a bad config, missing data or a refused file as one message, not a traceback."""

    @functools.wraps(fn)
    def wrapped(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            if _in_sweep():
                raise  # Hydra records the job as failed and the sweep goes on (SystemExit would end it)
            sys.exit(2)

    return wrapped


def _in_sweep() -> bool:
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class _NoAdverts(logging.Filter):
    """Drops Lightning's tips that advertise its cloud services."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def log_lightning_once() -> None:
    """``import lightning`` gives its logger a console handler of its own; under Hydra the root
    logger already prints (and writes the run's log file), so every message came out twice."""
    import lightning  # noqa: F401

    if logging.getLogger().handlers:
        logger = logging.getLogger("lightning")
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdverts())


def train_with_finetune(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg``; if it names ``finetune`` overrides, run that second phase from its best checkpoint."""
    from relvit.training import train

    log_lightning_once()

    first = train(cfg)
    if not cfg.get("finetune"):
        return first
    best = first.get("best_checkpoint")
    if not best:
        return first
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("finetune=", "pretrained="))]
    overrides += list(cfg.finetune)
    overrides += [f"pretrained={best}", "finetune=null", f"paths.output_dir={Path(cfg.paths.output_dir) / 'finetune'}"]
    log.info("second phase: %s", " ".join(overrides))
    second_cfg = compose(config_name=HydraConfig.get().job.config_name, overrides=overrides)
    second = train(second_cfg)
    return {**second, "pretrain": first}


def report_test_accuracy(summary: dict[str, Any]) -> None:
    from relvit.distributed import is_rank_zero

    test = summary.get("test", {})
    if "test/acc" in test and is_rank_zero():
        print(f"final test accuracy: {test['test/acc']:.4f}  ({summary['output_dir']})", flush=True)
