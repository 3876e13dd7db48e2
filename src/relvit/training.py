"""One training run from a composed config: build, fit, judge the best checkpoint, report."""
from __future__ import annotations

import json
import re
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from relvit.checkpoints import load_pretrained, read_checkpoint, state_dict_of
from relvit.config_checks import ConfigError, check_config
from relvit.data.datamodule import RelViTDataModule
from relvit.distributed import is_rank_zero, requeued_checkpoint
from relvit.module import RelViTModule
from relvit.task import TaskSpec

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
    """Check the config, then build and set up data and model (data problems surface here)."""
    check_config(cfg)
    megapatch = cfg.task.get("megapatch")
    if megapatch:
        # the model sees the tiled image: side x side patches
        cells = megapatch.side
        backbone = build_group(cfg, "backbone", image_size=megapatch.side * cfg.dataset.patch_size)
    else:
        cells = cfg.dataset.image_size // cfg.dataset.patch_size
        backbone = build_group(cfg, "backbone")
    if backbone.grid_size != cells:
        raise ConfigError(
            f"dataset.patch_size={cfg.dataset.patch_size} is invalid for this backbone: the model sees "
            f"{cells} x {cells} patches, but the backbone's SSL "
            f"token grid is {backbone.grid_size} x {backbone.grid_size}; use "
            f"dataset.patch_size={cfg.dataset.image_size // backbone.grid_size}"
        )
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
        task=TaskSpec.from_config(OmegaConf.to_container(cfg.task, resolve=True)),
        num_classes=datamodule.num_classes,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
        # saved unresolved, so that paths and interpolations follow the evaluating run's overrides
        run_config=run_config if run_config is not None else OmegaConf.to_container(cfg, resolve=False),
    )
    return Run(cfg, datamodule, module)


def make_trainer(cfg: DictConfig) -> L.Trainer:
    """The configured Trainer with the configured callbacks and loggers."""
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


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


def check_fresh_output_dir(output_dir: Path) -> None:
    """Refuse to write a run where another run's results already are."""
    for name in ("checkpoints", "metrics.json"):
        if (output_dir / name).exists():
            raise FileExistsError(f"{output_dir} already holds a run ({name}); choose a new output dir")


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """A short aligned table: one row per metric, one column per split."""
    splits = list(metrics)
    names = sorted({k.split("/", 1)[1] for split in splits for k in metrics[split]})
    rows = [["metric", *splits]]
    for name in names:
        rows.append([name, *(f"{metrics[s].get(f'{s}/{name}', float('nan')):.4f}" for s in splits)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit one run into ``cfg.paths.output_dir`` and return the metrics of its best checkpoint."""
    output_dir = Path(cfg.paths.output_dir)
    requeued = requeued_checkpoint(output_dir)
    if requeued is None and is_rank_zero():  # the other ranks of a DDP job share rank zero's fresh dir
        check_fresh_output_dir(output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run = build(cfg)
    if cfg.get("pretrained"):
        load_pretrained(run.module, cfg.pretrained)
    elif cfg.task.name == "downstream":
        log.warning("task=downstream without pretrained=<checkpoint>: training from scratch")
    output_dir.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    trainer = make_trainer(cfg)
    resume = str(requeued) if requeued else cfg.get("resume")
    if resume:
        read_checkpoint(resume)  # refuses code-bearing files with this project's message
    trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=resume, weights_only=True)
    if trainer.fast_dev_run:
        return {}
    checkpoint = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))
    best = checkpoint.best_model_path or checkpoint.last_model_path
    restore_weights(run.module, best)
    metrics: dict[str, Any] = evaluate_splits(trainer, run, ["val", "test"])
    summary = {"task": cfg.task.name, "best_checkpoint": str(best), "output_dir": str(output_dir),
               "monitor": cfg.task.monitor, **metrics}
    if not trainer.is_global_zero:
        return summary
    (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(f"\nrun dir: {output_dir}\nbest checkpoint: {best}\n{format_table(metrics)}\n", flush=True)
    return summary
