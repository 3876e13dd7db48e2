"""The hardware-dependent choices: default precision, fused AdamW on CUDA, compile=true, and a training
step that never waits for the device."""
import functools

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from relvit.config.checks import check_config
from relvit.errors import ConfigError
from relvit.model.hardware import fused_on_cuda, resolve_precision
from relvit.training.run import build, make_trainer, train

from conftest import compose_config


def test_precision_resolves_to_fp32_on_the_cpu(tmp_path):
    assert resolve_precision("cpu") == "32-true"
    cfg = compose_config(tmp_path, ["trainer.accelerator=cpu"])
    assert cfg.trainer.precision == "32-true"
    assert compose_config(tmp_path, ["trainer=cpu"]).trainer.precision == "32-true"
    # a value the user sets is kept
    assert compose_config(tmp_path, ["trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"


def test_precision_resolves_to_bf16_on_a_gpu_with_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto") == "bf16-mixed"
    assert resolve_precision("gpu") == "bf16-mixed"
    assert resolve_precision("cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("gpu") == "32-true"


def test_adamw_is_fused_on_cuda_only_when_the_config_leaves_it_unset(tmp_path):
    factory = instantiate(compose_config(tmp_path).optimizer)
    assert isinstance(factory, functools.partial) and factory.keywords["fused"] is None
    assert fused_on_cuda(factory, torch.device("cuda", 0)).keywords["fused"] is True
    assert fused_on_cuda(factory, torch.device("cpu")) is factory
    unfused = functools.partial(factory, fused=False)
    assert fused_on_cuda(unfused, torch.device("cuda", 0)) is unfused
    # on the CPU the optimiser a run builds works with fused=None (torch's default)
    param = torch.nn.Parameter(torch.ones(2))
    factory([param]).step()


def test_compile_must_be_a_boolean(tiny_cfg):
    cfg = tiny_cfg()
    with open_dict(cfg):
        cfg.compile = "yes"
    with pytest.raises(ConfigError, match="compile='yes' is invalid: true or false"):
        check_config(cfg)


def _fit_steps(cfg, steps: int, callbacks=()) -> tuple:
    """Fit ``steps`` training steps with no validation, checkpoint or logger: (run, trainer)."""
    with open_dict(cfg):
        cfg.trainer.limit_train_batches = steps
        cfg.trainer.limit_val_batches = 0
        cfg.callbacks = {}
        cfg.logger = {}
    run = build(cfg)
    trainer = make_trainer(cfg, list(callbacks))
    trainer.fit(run.module, datamodule=run.datamodule)
    return run, trainer


def test_compile_true_trains_two_steps_on_the_cpu(tiny_cfg):
    """The smallest model, compiled: two optimiser steps change the weights and keep them finite."""
    cfg = tiny_cfg("task=joint", "compile=true", "data.batch_size=16")
    before = build(cfg).module.backbone.state_dict()
    run, trainer = _fit_steps(cfg, 2)
    after = run.module.backbone.state_dict()
    assert trainer.global_step == 2
    assert list(after) == list(before)  # compiled in place: the checkpoint keys are those of an eager run
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


@pytest.mark.slow
def test_compile_true_runs_a_whole_upstream_run(tiny_cfg):
    """Backbone, pretext heads and per-patch colour ops compiled, through training, validation and test."""
    cfg = tiny_cfg("task=upstream", "compile=true", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                   "trainer.limit_test_batches=1", "data.batch_size=32")
    summary = train(cfg)
    assert torch.isfinite(torch.tensor(summary["val"]["val/loss"]))


class _NoSyncInSteps(L.Callback):
    """Turns CUDA's sync debug mode to 'error' for the training steps after the first."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx >= 1:
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_training_steps_do_not_synchronise_with_the_host(tiny_cfg):
    cfg = tiny_cfg("task=upstream", "trainer.accelerator=gpu", "trainer.log_every_n_steps=1000")
    try:
        _, trainer = _fit_steps(cfg, 4, [_NoSyncInSteps()])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.global_step == 4
