"""Every data and model path of a run that depends on the device it lands on, gathered in one
``DevicePlan``: what a composed config resolves to on a CUDA machine can be read (and tested) on a CPU.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate

from relvit.data.datamodule import pins_memory
from relvit.data.encoded import decodes_on_device
from relvit.data.patch_augment import patch_form
from relvit.model.hardware import fused_on_cuda

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
