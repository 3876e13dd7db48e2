"""The run a bf16 CUDA device resolves to, resolved as that device would and then run on the CPU.

A CUDA machine with bfloat16 gets bf16-mixed, the fused AdamW step with gradient clipping, the
sync-free per-patch form, JPEG bytes decoded on the model's device, pinned memory and non-blocking
copies. Everything of that a CPU can execute runs here for every task and both data paths; what needs
CUDA itself (nvJPEG, pinned memory, non-blocking copies, the CUDA kernels) is listed in
docs/performance.md and run by benchmarks/gpu_acceptance.py.
"""
from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.apply_func import _BLOCKING_DEVICE_TYPES
from lightning.pytorch.plugins.precision import MixedPrecision

import relvit.data.patch_augment as patch_augment_module
from relvit.data.encoded import EncodedImageDataset
from relvit.data.patch_augment import PatchAugment
from relvit.training.device_plan import BLOCKING_DEVICE_TYPES, DevicePlan, resolve_plan
from relvit.training.run import build, make_trainer, train

from conftest import compose_config, write_image

TASKS = ("upstream", "downstream", "joint", "megapatch")
TASK_OVERRIDES = {"megapatch": ["task.megapatch.side=3"]}
CUDA = torch.device("cuda", 0)


def as_bf16_cuda(monkeypatch) -> None:
    """torch.cuda answers as on a CUDA machine whose GPU has bfloat16 (A100, H100, H200)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def gpu_plan(tmp_path, monkeypatch, overrides: list[str]) -> DevicePlan:
    """The plan of the config composed as on a bf16 CUDA machine (trainer defaults, accelerator auto)."""
    with monkeypatch.context() as patched:
        as_bf16_cuda(patched)
        cfg = compose_config(tmp_path, overrides)
        return resolve_plan(cfg, CUDA)


def test_lightning_and_the_plan_agree_on_blocking_copies():
    assert BLOCKING_DEVICE_TYPES == _BLOCKING_DEVICE_TYPES


@pytest.mark.parametrize("task", TASKS)
def test_a_bf16_cuda_device_resolves_to_the_fast_paths(tmp_path, monkeypatch, task):
    plan = gpu_plan(tmp_path, monkeypatch, [f"task={task}", *TASK_OVERRIDES.get(task, [])])
    augments = task in ("upstream", "megapatch")
    assert plan == DevicePlan(device="cuda", precision="bf16-mixed", fused=True, compile=False,
                              patch_form="sync_free" if augments else None, decode="device",
                              in_memory_on_device=True, pin_memory=True, non_blocking=True)
    # the same config on this CPU resolves to the CPU's paths
    cpu = resolve_plan(compose_config(tmp_path, [f"task={task}", *TASK_OVERRIDES.get(task, [])]), torch.device("cpu"))
    assert (cpu.precision, cpu.fused, cpu.decode, cpu.pin_memory, cpu.non_blocking) == ("32-true", False, "workers", False, False)
    assert cpu.patch_form == ("grouped" if augments else None)


def test_recipe_original_trains_in_fp32_on_a_gpu(tmp_path, monkeypatch):
    assert gpu_plan(tmp_path, monkeypatch, ["recipe=original"]).precision == "32-true"
    assert gpu_plan(tmp_path, monkeypatch, ["recipe=original", "trainer.precision=bf16-mixed"]).precision == "bf16-mixed"


def test_the_plan_follows_the_users_settings(tmp_path, monkeypatch):
    plan = gpu_plan(tmp_path, monkeypatch, ["optimizer.fused=false", "data.decode=cpu", "data.pin_memory=false",
                                            "task.patch_augment.form=grouped", "compile=true"])
    assert (plan.fused, plan.decode, plan.pin_memory, plan.patch_form, plan.compile) == (False, "workers", False, "grouped", True)


def write_jpeg_folder(root) -> None:
    """80 small JPEGs in two class folders (40 each), a train split only: val is held out of it."""
    for i in range(80):
        colour = (40 + 2 * i, 200 - i, (i * 37) % 256) if i % 2 else (220 - i, 30 + i, (i * 53) % 256)
        write_image(root / "train" / f"class{i % 2}" / f"{i:03d}.jpg", 20 + i % 5, colour)


class PathProbe(L.Callback):
    """What the run really executed: the precision plugin, the optimiser's kernel, the dataset the
    loader reads, the per-patch form, and the gradient norm right after clipping."""

    def __init__(self):
        self.seen: dict = {}
        self.clipped_norms: list[float] = []

    def on_train_start(self, trainer, module):
        self.seen["plugin"] = trainer.precision_plugin
        self.seen["fused"] = trainer.optimizers[0].defaults.get("fused")
        self.seen["dataset"] = type(trainer.train_dataloader.dataset).__name__ if hasattr(trainer.train_dataloader, "dataset") else "InMemoryLoader"
        clip = module.configure_gradient_clipping

        def clip_and_measure(*args, **kwargs):
            clip(*args, **kwargs)
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            self.clipped_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

        module.configure_gradient_clipping = clip_and_measure


def plan_run_config(tiny_cfg, tmp_path, plan: DevicePlan | None, task: str, data: str, *extra: str):
    """A two-step run of ``task`` on ``data`` under ``plan``'s CPU overrides (None: the device's defaults)."""
    overrides = [f"task={task}", *TASK_OVERRIDES.get(task, []), *(plan.cpu_overrides() if plan else []),
                 "trainer.limit_train_batches=2", "data.batch_size=16", "trainer.gradient_clip_val=0.05", *extra]
    if data == "jpeg":
        write_jpeg_folder(tmp_path / "folder")
        overrides += ["dataset=image_folder", f"dataset.root={tmp_path / 'folder'}", "dataset.image_size=16",
                      "dataset.patch_size=4", "data.num_workers=0"]
    return tiny_cfg(*overrides)


@pytest.mark.parametrize("data", ["in_memory", "jpeg"])
@pytest.mark.parametrize("task", TASKS)
def test_the_bf16_gpu_plan_trains_on_the_cpu(tiny_cfg, tmp_path, monkeypatch, task, data):
    """Every task on both data paths, with the settings a bf16 GPU resolves to: the run finishes and
    really took bf16 autocast, the fused step after clipping, the device decode and the sync-free form."""
    plan = gpu_plan(tmp_path, monkeypatch, [f"task={task}", *TASK_OVERRIDES.get(task, [])])
    cfg = plan_run_config(tiny_cfg, tmp_path, plan, task, data)
    calls: list[str] = []
    sync_free = PatchAugment.augment_sync_free
    grouped = patch_augment_module.augment_grouped
    monkeypatch.setattr(PatchAugment, "augment_sync_free", lambda self, *a: (calls.append("sync_free"), sync_free(self, *a))[1])
    monkeypatch.setattr(patch_augment_module, "augment_grouped", lambda *a, **k: (calls.append("grouped"), grouped(*a, **k))[1])
    probe = PathProbe()
    run = build(cfg)
    trainer = make_trainer(cfg, [probe])
    trainer.fit(run.module, datamodule=run.datamodule)
    assert trainer.global_step == 2
    plugin = probe.seen["plugin"]
    assert isinstance(plugin, MixedPrecision) and plugin.precision == "bf16-mixed" and plugin.scaler is None
    assert probe.seen["fused"] is True
    assert len(probe.clipped_norms) == 2 and all(n <= 0.05 * 1.001 for n in probe.clipped_norms)
    assert (probe.seen["dataset"] == EncodedImageDataset.__name__) == (data == "jpeg")
    if plan.patch_form is not None:
        assert "sync_free" in calls and "grouped" not in calls
    assert all(torch.isfinite(p).all() for p in run.module.parameters())


def test_the_bf16_fused_clipped_run_trains_through_train_py(tiny_cfg, tmp_path):
    """The command that raised at the first step (bf16-mixed, fused AdamW, clipping 1.0) trains, saves
    and evaluates its best checkpoint."""
    cfg = tiny_cfg("task=upstream", "trainer.precision=bf16-mixed", "optimizer.fused=true")
    summary = train(cfg)
    assert math.isfinite(summary["val"]["val/loss"])
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_the_compiled_bf16_gpu_plan_trains_on_the_cpu(tiny_cfg, tmp_path, monkeypatch):
    """compile=true on top of the GPU plan: the backbone, the heads and the sync-free colour ops compiled."""
    plan = gpu_plan(tmp_path, monkeypatch, ["compile=true"])
    assert plan.compile
    cfg = plan_run_config(tiny_cfg, tmp_path, plan, "upstream", "in_memory", "trainer.limit_val_batches=0",
                          "callbacks={}", "logger={}")
    run = build(cfg)
    trainer = make_trainer(cfg)
    trainer.fit(run.module, datamodule=run.datamodule)
    assert trainer.global_step == 2
    assert all(torch.isfinite(p).all() for p in run.module.parameters())


@pytest.mark.gpu
@pytest.mark.parametrize("data", ["in_memory", "jpeg"])
@pytest.mark.parametrize("task", TASKS)
def test_the_defaults_train_on_a_cuda_device(tiny_cfg, tmp_path, monkeypatch, task, data):
    """Nothing overridden, on a real CUDA device: bf16 autocast, the CUDA fused AdamW step after
    clipping, nvJPEG or the on-device in-memory batches, the sync-free form, pinned memory and
    non-blocking copies, the CUDA generators of the per-patch parameters."""
    cfg = plan_run_config(tiny_cfg, tmp_path, None, task, data)
    plan = resolve_plan(cfg, CUDA)
    assert (plan.precision, plan.fused, plan.decode, plan.pin_memory, plan.non_blocking) == ("bf16-mixed", True, "device", True, True)
    probe = PathProbe()
    run = build(cfg)
    trainer = make_trainer(cfg, [probe])
    trainer.fit(run.module, datamodule=run.datamodule)
    assert trainer.global_step == 2 and probe.seen["fused"] is True
    assert next(run.module.parameters()).device.type == "cuda"
    assert len(probe.clipped_norms) == 2 and all(n <= 0.05 * 1.001 for n in probe.clipped_norms)
    assert all(torch.isfinite(p).all() for p in run.module.parameters())
