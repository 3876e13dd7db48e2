"""Choices that follow the hardware a run lands on: numeric precision, the fused optimiser, compilation,
and, gathered in one ``DevicePlan``, every data and model path that depends on the device.

Unless set, ``trainer.precision`` resolves (``${relvit_precision:...}``) to bf16 mixed precision where a
CUDA device supports bfloat16 and to 32-bit everywhere else (and under ``recipe=original``).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
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


#: Device types whose host-to-device copies Lightning makes blocking (the others get non_blocking=True).
BLOCKING_DEVICE_TYPES = ("cpu", "mps")


@dataclass(frozen=True)
class DevicePlan:
    """What a run's device-dependent settings resolve to on one device (``resolve_plan``)."""

    device: str  # the model's device type
    precision: str  # trainer.precision
    fused: bool  # AdamW's single-kernel step
    compile: bool  # backbone, heads and (in the sync-free form) the patch colour ops compiled
    patch_form: str | None  # grouped | sync_free, None for tasks without per-patch augmentation
    decode: str  # JPEG files: "device" (bytes read by workers, decoded on the model's device) or "workers" (PIL)
    in_memory_on_device: bool  # in-memory datasets held and batched on the model's device
    pin_memory: bool  # file loaders' batches in pinned host memory
    non_blocking: bool  # host-to-device batch copies that overlap the step

    def cpu_overrides(self) -> list[str]:
        """Overrides under which a run on the CPU takes this plan's paths, as far as a CPU can execute
        them: pinned memory and non-blocking copies need a CUDA device and stay as the CPU has them."""
        flag = {True: "true", False: "false"}
        overrides = [f"trainer.precision={self.precision}", f"optimizer.fused={flag[self.fused]}",
                     f"compile={flag[self.compile]}", f"data.decode={'device' if self.decode == 'device' else 'cpu'}",
                     f"data.in_memory_on_device={flag[self.in_memory_on_device]}"]
        if self.patch_form is not None:
            overrides.append(f"task.patch_augment.form={self.patch_form}")
        return overrides


def resolve_plan(cfg: Any, device: torch.device) -> DevicePlan:
    """The plan of a composed run config ``cfg`` on ``device``, through the same functions the run
    calls where it makes each choice (so a test that composes the config as a CUDA machine would, with
    ``torch.cuda`` answering as there, gets what that machine runs)."""
    from hydra.utils import instantiate

    from relvit.data.datamodule import pins_memory
    from relvit.data.encoded import decodes_on_device
    from relvit.data.patch_augment import patch_form

    factory = fused_on_cuda(instantiate(cfg.optimizer), device)
    fused = factory.keywords.get("fused") if isinstance(factory, functools.partial) else None
    augment = cfg.task.get("patch_augment")
    return DevicePlan(
        device=device.type,
        precision=str(cfg.trainer.precision),
        fused=bool(fused),
        compile=bool(cfg.get("compile", False)),
        patch_form=patch_form(str(augment.get("form", "auto")), device) if augment else None,
        decode="device" if decodes_on_device(str(cfg.data.decode), device, ["image.jpg"]) else "workers",
        in_memory_on_device=bool(cfg.data.in_memory_on_device),
        pin_memory=pins_memory(bool(cfg.data.pin_memory)),
        non_blocking=device.type not in BLOCKING_DEVICE_TYPES,
    )
