"""Choices that follow the hardware a run lands on: numeric precision, the fused optimiser, compilation.

Unless set, ``trainer.precision`` resolves (``${relvit_precision:${trainer.accelerator}}``) to bf16 mixed
precision where a CUDA device supports bfloat16 and to 32-bit everywhere else.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from relvit.errors import ConfigError

#: The accelerators that may run on a CUDA device (Lightning's names).
CUDA_ACCELERATORS = ("auto", "gpu", "cuda")


def resolve_precision(accelerator: Any = "auto") -> str:
    """The precision a run on ``accelerator`` gets by default: ``bf16-mixed`` where it lands on a CUDA
    device with bfloat16 (Ampere and later), ``32-true`` on the CPU and on older GPUs."""
    on_cuda = str(accelerator) in CUDA_ACCELERATORS and torch.cuda.is_available()
    return "bf16-mixed" if on_cuda and torch.cuda.is_bf16_supported() else "32-true"



def fused_on_cuda(factory: Callable[..., torch.optim.Optimizer], device: torch.device) -> Callable[..., torch.optim.Optimizer]:
    """The optimiser factory, with ``fused=True`` where the parameters live on a CUDA device and the
    config leaves ``fused`` unset (null): one kernel per step instead of one per tensor group."""
    if not isinstance(factory, functools.partial) or "fused" not in factory.keywords:
        return factory
    if factory.keywords["fused"] is not None or device.type != "cuda":
        return factory
    return functools.partial(factory, fused=True)


def check_compile_flag(value: Any) -> bool:
    """``compile`` must be a boolean (the config key that compiles the model and the patch colour ops)."""
    if not isinstance(value, bool):
        raise ConfigError(f"compile={value!r} is invalid: use compile=true or compile=false")
    return value


def compile_model(module: nn.Module, parts: tuple[str, ...] = ("backbone", "relation_head", "position_head")) -> None:
    """Compile the named submodules in place with torch.compile; their parameters and state-dict keys
    stay as they are, so checkpoints of compiled and eager runs are interchangeable."""
    for name in parts:
        part = getattr(module, name, None)
        if isinstance(part, nn.Module):
            part.compile()
