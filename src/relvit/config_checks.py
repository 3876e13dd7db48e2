"""Checks of the composed config that run before any work starts."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from relvit.checkpoints import EXPORTED_WEIGHTS, WEIGHT_SUFFIXES, weight_file
from relvit.errors import ConfigError
from relvit.task import TaskSpec


def _require(ok: bool, key: str, value: Any, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {valid}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_values(cfg: DictConfig) -> None:
    """Refuse a config in which a mandatory value (``???``) was left unset."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        hint = " (the upstream checkpoint to start from)" if "pretrained" in missing else ""
        raise ConfigError(f"{missing[0]} has no value{hint}: pass {missing[0]}=<value> on the command line")


def check_config(cfg: DictConfig) -> TaskSpec:
    """Raise ConfigError on the first value that cannot work (keys absent from cfg are skipped).

    Each rule is checked once: the rules that span groups (image, patch and grid sizes, the
    mega-patch side, resume against pretrained) live here; a rule of one value lives either here or
    in the constructor that takes the value (data.val_fraction in the data module, data.on_bad_image,
    the backbone's options), never both. Returns the parsed task node.
    """
    get = lambda key: OmegaConf.select(cfg, key, default=None)  # noqa: E731
    require_values(cfg)
    ds = cfg.dataset
    _require(isinstance(ds.image_size, int) and ds.image_size > 0, "dataset.image_size", ds.image_size, "a positive integer")
    _require(isinstance(ds.patch_size, int) and ds.patch_size > 0, "dataset.patch_size", ds.patch_size, "a positive integer")
    _require(ds.image_size % ds.patch_size == 0, "dataset.patch_size", ds.patch_size,
             f"the image size dataset.image_size={ds.image_size} must be a multiple of it")
    _require(ds.image_size // ds.patch_size >= 2, "dataset.patch_size", ds.patch_size,
             f"the patch grid needs at least 2 x 2 cells (image size {ds.image_size})")
    for key in ("mean", "std"):
        values = list(ds[key])
        _require(len(values) == 3, f"dataset.{key}", values, "three per-channel values")
    _require(all(s > 0 for s in ds.std), "dataset.std", list(ds.std), "positive values")
    _require(isinstance(cfg.get("seed"), int) and not isinstance(cfg.get("seed"), bool) and 0 <= cfg.seed < 2**32,
             "seed", cfg.get("seed"), "an integer from 0 to 2**32 - 1")
    for key in ("data.batch_size", "trainer.max_epochs"):
        value = get(key)
        if value is not None:
            _require(_is_int(value) and value > 0, key, value, "a positive integer")
    eval_batch = get("data.eval_batch_size")
    _require(eval_batch is None or (_is_int(eval_batch) and eval_batch > 0), "data.eval_batch_size", eval_batch,
             "null (the training batch size) or a positive integer")
    workers = get("data.num_workers")
    if workers is not None:
        _require(_is_int(workers) and workers >= 0, "data.num_workers", workers, "zero or a positive integer")
    clip = get("trainer.gradient_clip_val")
    _require(clip is None or (_is_number(clip) and clip >= 0), "trainer.gradient_clip_val", clip,
             "null (no clipping) or a finite norm >= 0")
    accelerator = get("trainer.accelerator")
    if accelerator in ("gpu", "cuda"):
        import torch

        _require(torch.cuda.is_available(), "trainer.accelerator", accelerator,
                 "this machine has no CUDA GPU: use trainer=cpu, or trainer.accelerator=auto")
    # per-stage lists (Swin) are checked by their backbone
    vit_sizes = {key: get(key) for key in ("backbone.depth", "backbone.num_heads", "backbone.embed_dim")}
    for key, value in vit_sizes.items():
        if value is not None and not OmegaConf.is_list(value):
            _require(isinstance(value, int) and value > 0, key, value, "a positive integer")
    if all(isinstance(v, int) for v in vit_sizes.values()):
        _require(cfg.backbone.embed_dim % cfg.backbone.num_heads == 0, "backbone.num_heads", cfg.backbone.num_heads,
                 f"it must divide backbone.embed_dim={cfg.backbone.embed_dim}")
    for key in ("backbone.drop_rate", "backbone.attn_drop_rate", "backbone.drop_path_rate"):
        value = get(key)
        if value is not None:
            _require(_is_number(value) and 0.0 <= value < 1.0, key, value, "a rate in [0, 1)")
    lr = get("optimizer.lr")
    if lr is not None:
        _require(_is_number(lr) and lr > 0, "optimizer.lr", lr, "a positive, finite learning rate such as 5e-4")
    wd = get("optimizer.weight_decay")
    if wd is not None:
        _require(_is_number(wd) and wd >= 0, "optimizer.weight_decay", wd, "a finite number >= 0")
    warm = get("scheduler.warmup_fraction")
    if warm is not None:
        _require(_is_number(warm) and 0.0 <= warm < 1.0, "scheduler.warmup_fraction", warm, "a fraction in [0, 1)")
    side = get("task.megapatch.side")
    if side is not None:
        cells = ds.image_size // ds.patch_size
        _require(isinstance(side, int) and 2 <= side <= cells, "task.megapatch.side", side,
                 f"an integer from 2 to the patch grid side {cells} ({ds.image_size} px images, {ds.patch_size} px patches)")
    try:
        task = TaskSpec.from_config(OmegaConf.to_container(cfg.task, resolve=True))
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"task: {err}") from None
    pretrained = get("pretrained")
    if pretrained is not None:
        path = weight_file(pretrained)
        _require(path.is_file(), "pretrained", str(pretrained),
                 f"the path of an existing checkpoint or weight file, or a directory with {EXPORTED_WEIGHTS}")
        _require(path.suffix in WEIGHT_SUFFIXES, "pretrained", str(pretrained), f"a file ending in one of {WEIGHT_SUFFIXES}")
    strict = get("pretrained_strict")
    _require(isinstance(strict, bool), "pretrained_strict", strict, "true or false")
    resume = get("resume")
    if resume is not None:
        _require(Path(str(resume)).is_file(), "resume", str(resume), "the path of an existing checkpoint written by train.py")
        _require(pretrained is None, "pretrained", str(pretrained), "null when resume is set (resuming restores all weights)")
    extend = get("extend_to_epochs")
    if extend is not None:
        _require(_is_int(extend) and extend > 0, "extend_to_epochs", extend, "null or a positive number of epochs")
        _require(resume is not None, "extend_to_epochs", extend, "given with resume=<run>/checkpoints/last.ckpt, the run to extend")
    finetune = get("finetune")
    if finetune is not None:
        ok = OmegaConf.is_list(finetune) and all(isinstance(x, str) and "=" in x for x in finetune)
        _require(ok, "finetune", finetune, "null or a list of overrides like [task=downstream, trainer.max_epochs=10]")
    return task


def check_token_grid(cfg: DictConfig, grid_size: int) -> None:
    """The built backbone's SSL token grid (``grid_size`` a side) must be the patch grid the model
    sees: image_size / patch_size cells a side, or the mega-patch side when the task tiles."""
    megapatch = cfg.task.get("megapatch")
    cells = megapatch.side if megapatch else cfg.dataset.image_size // cfg.dataset.patch_size
    if grid_size != cells:
        raise ConfigError(
            f"dataset.patch_size={cfg.dataset.patch_size} is invalid for this backbone: the model sees "
            f"{cells} x {cells} patches, but the backbone's SSL token grid is {grid_size} x {grid_size}; "
            f"use dataset.patch_size={cfg.dataset.image_size // grid_size}"
        )
