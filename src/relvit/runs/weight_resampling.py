"""Fitting weights made for another resolution: position embeddings, patch-embedding kernels and
Swin's relative-position tables are resampled to this run's sizes with timm's functions."""
from __future__ import annotations

import math
from typing import Any

import torch
from timm.layers import (
    resample_abs_pos_embed,
    resample_patch_embed,
    resize_rel_pos_bias_table,
)
from torch import nn


class CannotResample(ValueError):
    """A tensor of another shape that no resampling can fit; the message says why."""


def _pos_embed(name: str, value: torch.Tensor, target: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """[1, P + H*W, D] -> [1, P + h*w, D]; the P prefix (CLS) tokens are kept as they are."""
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if leaf in dict(owner.named_buffers(recurse=False)):
        raise CannotResample("a fixed table (a buffer): this run computes its own for its size")
    if value.ndim != 3 or target.ndim != 3 or value.shape[-1] != target.shape[-1]:
        raise CannotResample(f"the width differs ({value.shape[-1]} vs {target.shape[-1]})")
    prefix = getattr(owner, "num_prefix_tokens", None)  # timm's count of CLS / register tokens
    if prefix is None:
        prefix = 1 if getattr(owner, "has_cls_token", False) else 0
    sides = [math.isqrt(max(0, n - prefix)) for n in (value.shape[1], target.shape[1])]
    if any(side < 1 or side * side != n - prefix for side, n in zip(sides, (value.shape[1], target.shape[1]))):
        raise CannotResample(f"{value.shape[1]} tokens are not {prefix} prefix tokens and a square grid")
    old_side, new_side = sides
    return resample_abs_pos_embed(value, [new_side, new_side], [old_side, old_side], num_prefix_tokens=prefix)


def _patch_kernel(name: str, value: torch.Tensor, target: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Conv kernel [D, C, p, p] -> [D, C, q, q] (FlexiViT's pseudo-inverse resize, so that a resized
    patch gives the same token)."""
    if value.ndim != 4 or value.shape[:2] != target.shape[:2]:
        raise CannotResample(f"only the kernel size may differ ({tuple(value.shape[:2])} vs {tuple(target.shape[:2])} channels)")
    return resample_patch_embed(value, list(target.shape[-2:]))


def _relative_table(name: str, value: torch.Tensor, target: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Swin's relative-position bias [(2W-1)^2, heads] -> [(2w-1)^2, heads] for this run's window w."""
    if value.ndim != 2 or value.shape[1] != target.shape[1]:
        raise CannotResample(f"the number of heads differs ({value.shape[-1]} vs {target.shape[-1]})")
    old_side = math.isqrt(value.shape[0])
    if old_side * old_side != value.shape[0] or old_side % 2 == 0:
        raise CannotResample(f"{value.shape[0]} entries are no square window's table")
    attention: Any = module.get_submodule(name.rsplit(".", 1)[0])  # timm's WindowAttention
    window = tuple(attention.window_size)
    return resize_rel_pos_bias_table(value, new_window_size=window, new_bias_shape=tuple(target.shape))


#: Name suffix -> the function that fits a tensor of that kind to this run's shape.
RESAMPLERS = {
    "pos_embed": _pos_embed,
    "patch_embed.proj.weight": _patch_kernel,
    "relative_position_bias_table": _relative_table,
}


def resample(name: str, value: torch.Tensor, target: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``value`` fitted to the shape of ``target`` (this run's tensor ``name`` of ``module``), or
    CannotResample saying why not (also for tensors of no resamplable kind)."""
    kind = next((suffix for suffix in RESAMPLERS if name.endswith(suffix)), None)
    if kind is None:
        raise CannotResample("not a position or patch embedding")
    with torch.no_grad():
        out = RESAMPLERS[kind](name, value.float(), target, module).to(target.dtype)
    if out.shape != target.shape:
        raise CannotResample(f"resampling gave {tuple(out.shape)}")
    return out
