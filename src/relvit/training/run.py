"""One training run from a composed config: build, fit, judge the best checkpoint, report."""
from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from relvit.config.checks import check_token_grid
from relvit.data.datamodule import RelViTDataModule
from relvit.errors import ConfigError
from relvit.model.hardware import compile_model
from relvit.model.module import RelViTModule
from relvit.model.schedules import StretchSchedule
from relvit.model.task import TaskSpec
from relvit.runs.checkpoint_io import AtomicCheckpointIO
from relvit.runs.checkpoints import load_pretrained, read_checkpoint, state_dict_of
from relvit.runs.console import model_summary, print_config, progress_bar
from relvit.runs.distributed import is_rank_zero, process_died, requeued_checkpoint, watch_processes
from relvit.runs.files import (
    SaveError,
    claim_run_dir,
    write_hydra_files,
    write_json,
    write_text,
)
from relvit.runs.guards import EpochCounters, FiniteLoss, RandomState, SaveOnSignal, StopRequest
from relvit.runs.trackers import finish_trackers

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything a run is made of, built from the config before any training starts."""

    cfg: DictConfig
    datamodule: RelViTDataModule
    module: RelViTModule


def build_group(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """Instantiate ``cfg[key]``; a constructor's ValueError becomes a ConfigError naming the group."""
    try:
        return instantiate(cfg[key], **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, TypeError)) and not isinstance(cause, ConfigError):
            # Hydra names the nested node that failed (e.g. data.patch_augment, from task.patch_augment)
            found = re.search(r"full_key: (\S+)", str(err))
            where = found.group(1) if found else key
            parent, _, leaf = where.rpartition(".")
            node = OmegaConf.select(cfg, parent)._get_node(leaf) if parent else None
            if node is not None and node._is_interpolation():  # name the key the user sets
                where = str(node._value()).strip("${}")
            raise ConfigError(f"{where}: {cause}") from None
        raise cause if isinstance(cause, Exception) else err


def build(cfg: DictConfig, run_config: dict[str, Any] | None = None) -> Run:
    """Build and set up data and model from a checked config (``check_config``); data problems surface here."""
    task = TaskSpec.from_config(OmegaConf.to_container(cfg.task, resolve=True))
    megapatch = cfg.task.get("megapatch")
    if megapatch:  # the model sees the tiled image: side x side patches
        backbone = build_group(cfg, "backbone", image_size=megapatch.side * cfg.dataset.patch_size)
    else:
        backbone = build_group(cfg, "backbone")
    check_token_grid(cfg, backbone.grid_size)
    datamodule: RelViTDataModule = build_group(cfg, "data")
    try:
        datamodule.prepare_data()
        datamodule.setup()
    except ValueError as err:  # a layout or class-list problem the source found in the data
        raise ConfigError(f"dataset {cfg.dataset.name!r}: {err}") from None
    expected = cfg.dataset.get("num_classes")
    if expected is not None and expected != datamodule.num_classes:
        raise ConfigError(
            f"dataset.num_classes={expected} is invalid: the data under {cfg.dataset.get('root')} has "
            f"{datamodule.num_classes} classes (set dataset.num_classes={datamodule.num_classes} or null)"
        )
    module = RelViTModule(
        backbone=backbone,
        task=task,
        num_classes=datamodule.num_classes,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
        # saved unresolved, so that paths and interpolations follow the evaluating run's overrides
        run_config=run_config if run_config is not None else cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=False)),
    )
    if cfg.get("compile", False):
        compile_model(module)
    return Run(cfg, datamodule, module)


def make_trainer(cfg: DictConfig, guards: Sequence[L.Callback] = ()) -> L.Trainer:
    """The configured Trainer with the configured callbacks and loggers, ``guards`` and atomic checkpoint writes."""
    progress, bar = progress_bar(cfg)
    # a callback set to null in an experiment (e.g. callbacks.knn_monitor: null) is switched off
    callbacks = ([instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None] + list(guards) + bar
                 + model_summary(cfg))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    # a debug run writes nothing: Lightning swaps its loggers for a dummy, so no config is given them either
    if loggers and not cfg.trainer.get("fast_dev_run"):  # every tracker keeps the composed config beside the metrics
        config = OmegaConf.to_container(cfg, resolve=True)
        for logger in loggers:
            logger.log_hyperparams(config)
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()],
                       enable_progress_bar=progress)


def restore_weights(module: L.LightningModule, ckpt_path: str | Path) -> None:
    """Load a checkpoint of this module (weights only, strict)."""
    module.load_state_dict(state_dict_of(read_checkpoint(ckpt_path)))


def evaluate_splits(trainer: L.Trainer, run: Run, splits: list[str]) -> dict[str, dict[str, float]]:
    """Metrics of ``run.module`` on each split the data has: {"val": {...}, "test": {...}}."""
    results = {}
    for split in splits:
        if split not in run.datamodule.splits:
            continue
        loop = trainer.validate if split == "val" else trainer.test
        out = loop(run.module, datamodule=run.datamodule, verbose=False)
        results[split] = {k: float(v) for k, v in out[0].items()}
    return results


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """A short aligned table: one row per metric, one column per split; ``-`` where a split has no
    such metric (the kNN monitor and the online probe measure on val only)."""
    splits = list(metrics)
    names = sorted({k.split("/", 1)[1] for split in splits for k in metrics[split]})
    rows = [["metric", *splits]]
    for name in names:
        rows.append([name, *(f"{metrics[s][f'{s}/{name}']:.4f}" if f"{s}/{name}" in metrics[s] else "-" for s in splits)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit one run of a checked config (``check_config``) into ``cfg.paths.output_dir`` and return the
    metrics of its best checkpoint.

    The run claims its directory before anything is written there; SIGTERM, SIGUSR1 and SIGINT save
    the current step and raise RunInterrupted; a non-finite loss raises TrainingDiverged.
    """
    try:
        return _train(cfg)
    except Exception as err:
        died = process_died(err)  # a collective failed because another process of the run is gone
        if died is None:
            raise
        raise died from None
    finally:  # the next run of this process (a second phase, a sweep's job) opens tracker runs of its own
        finish_trackers(failed=sys.exc_info()[0] is not None)


def _train(cfg: DictConfig) -> dict[str, Any]:
    output_dir = Path(cfg.paths.output_dir)
    debug = bool(cfg.trainer.get("fast_dev_run"))  # one batch of each split; nothing is written
    # a requeued SLURM job goes on in its own dir; the other ranks of a DDP job share rank zero's
    requeued = requeued_checkpoint(output_dir)
    if not debug and requeued is None and is_rank_zero():
        claim_run_dir(output_dir)
        write_hydra_files(output_dir, cfg)
    if is_rank_zero():
        print_config(cfg)
    with StopRequest() as stop:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        run = build(cfg)
        if cfg.get("pretrained"):
            load_pretrained(run.module, cfg.pretrained, strict=cfg.pretrained_strict)
        elif cfg.task.name == "downstream":
            log.warning("task=downstream without pretrained=<checkpoint>: training from scratch")
        if not debug and is_rank_zero():
            write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        stop.raise_if_asked("before training started")
        resume = str(requeued) if requeued else cfg.get("resume")
        resumed_step = None
        if resume:  # refuses damaged and code-bearing files with this project's messages
            resumed_step = read_checkpoint(resume).get("global_step")
        guards = [FiniteLoss(), RandomState(), EpochCounters()] + ([StretchSchedule()] if cfg.get("extend_to_epochs") else [])
        trainer = make_trainer(cfg, guards)
        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)  # type: ignore[attr-defined]
        if checkpoint is None and not debug:  # found before training, not after it
            raise ConfigError("callbacks: no ModelCheckpoint configured; a run needs callbacks.model_checkpoint")
        if checkpoint is not None and checkpoint.dirpath:
            trainer.callbacks.append(SaveOnSignal(stop, str(Path(checkpoint.dirpath) / "last.ckpt")))  # type: ignore[attr-defined]
        watch_processes(Path(checkpoint.dirpath) / "last.ckpt" if checkpoint is not None and checkpoint.dirpath else None, resume)
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=resume, weights_only=True)
        if resumed_step is not None and trainer.global_step == resumed_step and is_rank_zero():
            print(f"resume={resume}: nothing was left to train, the run had finished its trainer.max_epochs="
                  f"{trainer.max_epochs} epochs (extend_to_epochs=<more epochs> trains it on); evaluating its best "
                  "checkpoint", flush=True)
        if debug:
            metrics = evaluate_splits(trainer, run, ["val", "test"])
            print(f"\ndebug run (one batch of each split, nothing saved):\n{format_table(metrics)}\n", flush=True)
            return {"task": cfg.task.name, "output_dir": str(output_dir), "monitor": cfg.task.monitor, **metrics}
        assert checkpoint is not None  # refused above when not debugging
        best = checkpoint.best_model_path or checkpoint.last_model_path
        if not best or not Path(best).is_file():
            raise SaveError(f"training ended without a checkpoint in {checkpoint.dirpath}")
        stop.raise_if_asked(f"after training (epoch {trainer.current_epoch})", checkpoint.last_model_path or None)
        restore_weights(run.module, best)
        metrics = evaluate_splits(trainer, run, ["val", "test"])
    summary = {"task": cfg.task.name, "best_checkpoint": str(best), "output_dir": str(output_dir),
               "monitor": cfg.task.monitor, **metrics}
    if not trainer.is_global_zero:
        return summary
    write_json(output_dir / "metrics.json", summary)
    print(f"\nrun dir: {output_dir}\nbest checkpoint: {best}\n{format_table(metrics)}\n", flush=True)
    return summary
