"""Choices that follow the hardware a run lands on: numeric precision, the fused optimiser, gradient
clipping with either, compilation (the plan of every device-dependent path: relvit.training.device_plan).

Unless set, ``trainer.precision`` resolves (``${relvit_precision:...}``) to bf16 mixed precision where a
CUDA device supports bfloat16 and to 32-bit everywhere else (and under ``recipe=original``).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import nn

#: The accelerators that may run on a CUDA device (Lightning's names).
CUDA_ACCELERATORS = ("auto", "gpu", "cuda")


def resolve_precision(accelerator: Any = "auto", mixed: bool = True) -> str:
    """The precision a run on ``accelerator`` gets by default: ``bf16-mixed`` where it lands on a CUDA
    device with bfloat16 (Ampere and later) and ``mixed`` holds (``recipe.mixed_precision``; false under
    ``recipe=original``, which trains in fp32), ``32-true`` on the CPU and on older GPUs."""
    on_cuda = str(accelerator) in CUDA_ACCELERATORS and torch.cuda.is_available()
    return "bf16-mixed" if mixed and on_cuda and torch.cuda.is_bf16_supported() else "32-true"



def fused_on_cuda(factory: Callable[..., torch.optim.Optimizer], device: torch.device) -> Callable[..., torch.optim.Optimizer]:
    """The optimiser factory, with ``fused=True`` where the parameters live on a CUDA device and the
    config leaves ``fused`` unset (null): one kernel per step instead of one per tensor group."""
    if not isinstance(factory, functools.partial) or "fused" not in factory.keywords:
        return factory
    if factory.keywords["fused"] is not None or device.type != "cuda":
        return factory
    return functools.partial(factory, fused=True)


def clip_gradients(plugin: Precision, optimizer: torch.optim.Optimizer, clip_val: float | None,
                   algorithm: str | None) -> None:
    """Clip the gradients before the optimiser step, fused or not (``trainer.gradient_clip_val``).

    Lightning's mixed-precision plugin refuses every optimiser that unscales inside its step (fused
    AdamW), because under ``16-mixed`` the gradients it would clip are still scaled. Under ``bf16-mixed``
    there is no scaler and the gradients are the true ones, so they are clipped as in fp32; under
    ``16-mixed`` the scaler unscales them first, and the fused step then skips its own unscaling.
    """
    if not clip_val:
        return
    how = GradClipAlgorithmType(algorithm.lower() if algorithm else "norm")
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        plugin.clip_gradients(optimizer, clip_val, how)
        return
    scaler = getattr(plugin, "scaler", None)
    if scaler is not None:
        scaler.unscale_(optimizer)
    Precision.clip_gradients(plugin, optimizer, clip_val, how)


def compile_model(module: nn.Module, parts: tuple[str, ...] = ("backbone", "relation_head", "position_head")) -> None:
    """Compile the named submodules in place with torch.compile; their parameters and state-dict keys
    stay as they are, so checkpoints of compiled and eager runs are interchangeable."""
    for name in parts:
        part = getattr(module, name, None)
        if isinstance(part, nn.Module):
            part.compile()
