"""Evaluate a checkpoint with the config it was trained with, plus the user's new overrides."""
from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from relvit.checkpoints import read_checkpoint, state_dict_of
from relvit.config_checks import require_values
from relvit.errors import ConfigError
from relvit.run_files import claim_run_dir, write_hydra_files, write_json
from relvit.saved_config import rebuild, saved_run_config
from relvit.training import build, evaluate_splits, format_table
from relvit.trusted_config import trusted_resolved

#: Keys of evaluate.yaml itself, which are not part of the training config.
OWN_KEYS = ("ckpt_path", "splits")
VALID_SPLITS = ("val", "test")


def evaluate(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.splits``; ``overrides`` are the command line's (by default
    read from Hydra) and pick which keys of ``cfg`` replace the saved ones."""
    require_values(cfg)
    bad = [s for s in cfg.splits if s not in VALID_SPLITS]
    if bad:
        raise ConfigError(f"splits={list(cfg.splits)} is invalid: each split must be one of {VALID_SPLITS}")
    content = read_checkpoint(cfg.ckpt_path)
    saved = saved_run_config(content, "ckpt_path", str(cfg.ckpt_path))
    if overrides is None:
        overrides = list(HydraConfig.get().overrides.task)
    run_cfg = rebuild(saved, cfg, overrides, OWN_KEYS)
    # how the weights were obtained is history: evaluation loads them from the checkpoint itself
    run_cfg.pretrained = run_cfg.resume = run_cfg.finetune = None
    run_cfg = trusted_resolved(run_cfg, f"the config saved in {cfg.ckpt_path}")
    output_dir = claim_run_dir(cfg.paths.output_dir)
    write_hydra_files(output_dir, run_cfg)
    run = build(run_cfg, run_config=saved)
    run.module.load_state_dict(state_dict_of(content))
    trainer = instantiate(run_cfg.trainer, logger=False, callbacks=[], enable_progress_bar=False)
    metrics = evaluate_splits(trainer, run, list(cfg.splits))
    summary = {"checkpoint": str(cfg.ckpt_path), "output_dir": str(output_dir), **metrics}
    write_json(output_dir / "metrics.json", summary)
    print(f"\ncheckpoint: {cfg.ckpt_path}\nmetrics written to {output_dir / 'metrics.json'}\n{format_table(metrics)}\n", flush=True)
    return summary
