"""Evaluate a checkpoint with the config it was trained with, plus the user's new overrides."""
from __future__ import annotations

from typing import Any, cast

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from relvit.config.checks import check_config, require_values
from relvit.errors import ConfigError
from relvit.probes.frozen import frozen_eval
from relvit.runs.checkpoints import read_checkpoint, state_dict_of
from relvit.runs.files import claim_run_dir, write_hydra_files, write_json
from relvit.runs.saved_config import rebuild, saved_run_config
from relvit.runs.trusted_config import trusted_resolved
from relvit.training.run import Run, build, evaluate_splits, format_table

#: Keys of evaluate.yaml itself, which are not part of the training config.
OWN_KEYS = ("ckpt_path", "splits", "protocol", "features", "knn", "linear")


def evaluate(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.splits``; ``overrides`` are the command line's (by default
    read from Hydra) and pick which keys of ``cfg`` replace the saved ones."""
    require_values(cfg)  # ckpt_path, read before the config it holds can be checked
    protocol = cfg.get("protocol", "metrics")
    content = read_checkpoint(cfg.ckpt_path)
    saved = saved_run_config(content, "ckpt_path", str(cfg.ckpt_path))
    if overrides is None:
        overrides = list(HydraConfig.get().overrides.task)
    run_cfg = rebuild(saved, cfg, overrides, OWN_KEYS, source=f"the config saved in {cfg.ckpt_path}")
    # how the weights were obtained is history: evaluation loads them from the checkpoint itself
    run_cfg.pretrained = run_cfg.resume = run_cfg.finetune = None
    if protocol != "metrics":  # the frozen protocols use labels: data.labels_per_class applies to them
        run_cfg.data.restrict_labels = True
    run_cfg = trusted_resolved(run_cfg, f"the config saved in {cfg.ckpt_path}")
    check_config(cast(DictConfig, OmegaConf.merge(run_cfg, OmegaConf.masked_copy(cfg, list(OWN_KEYS)))), entry="evaluate")
    output_dir = claim_run_dir(cfg.paths.output_dir)
    write_hydra_files(output_dir, run_cfg)
    run = build(run_cfg, run_config=saved)
    run.module.load_state_dict(state_dict_of(content))
    if protocol == "metrics":
        trainer = instantiate(run_cfg.trainer, logger=False, callbacks=[], enable_progress_bar=False)
        metrics = evaluate_splits(trainer, run, list(cfg.splits))
    else:
        metrics = frozen_metrics(cfg, run, protocol, str(run_cfg.trainer.accelerator))
    summary = {"checkpoint": str(cfg.ckpt_path), "output_dir": str(output_dir), "protocol": protocol, **metrics}
    write_json(output_dir / "metrics.json", summary)
    print(f"\ncheckpoint: {cfg.ckpt_path}\nmetrics written to {output_dir / 'metrics.json'}\n{format_table(metrics)}\n", flush=True)
    return summary


def frozen_metrics(cfg: DictConfig, run: Run, protocol: str, accelerator: str) -> dict[str, dict[str, float]]:
    """kNN or linear evaluation of the checkpoint's encoder, with the task's use of position embeddings."""
    device = "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
    knn = OmegaConf.to_container(cfg.knn, resolve=True)
    linear = OmegaConf.to_container(cfg.linear, resolve=True)
    try:
        metrics = frozen_eval(run.module.backbone, run.datamodule, [protocol], str(cfg.features), run.module.task.add_pos_embed,
                              knn=knn, linear=linear, device=device)  # type: ignore[arg-type]
    except ValueError as err:
        raise ConfigError(f"protocol={protocol}: {err}") from None
    return {split: values for split, values in metrics.items() if split in cfg.splits}
