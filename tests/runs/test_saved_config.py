"""A config stored in a checkpoint is data: it cannot say where a run writes, nor read the environment."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from relvit.runs.saved_config import rebuild
from relvit.runs.trusted_config import UntrustedConfigError, project_entries


def stored(cfg, **changes):
    """The unresolved config a checkpoint of ``cfg`` holds, with ``changes`` (dotted keys) written in."""
    saved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for key, value in changes.items():
        OmegaConf.update(saved, key.replace("__", "."), value, force_add=True)
    return OmegaConf.to_container(saved)


def test_loggers_and_callbacks_are_conf_s_whatever_the_file_writes_in_them(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    outside = str(tmp_path / "outside")
    saved = stored(cfg, callbacks__model_checkpoint__dirpath=outside, callbacks__model_checkpoint__filename="../../x",
                   logger__csv={"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": outside},
                   trainer__default_root_dir=outside)
    merged = rebuild(saved, cfg, [])
    assert merged.callbacks.model_checkpoint.dirpath == f"{cfg.paths.output_dir}/checkpoints"
    assert merged.callbacks.model_checkpoint.filename == "best"
    assert set(merged.logger) == {"tensorboard", "csv"}  # the file chooses among conf's entries
    assert merged.logger.csv.save_dir == cfg.paths.output_dir == merged.trainer.default_root_dir
    assert OmegaConf.to_container(merged.logger.csv, resolve=True)["name"] == project_entries("logger")["csv"]["name"]


def test_a_stored_config_cannot_add_a_logger_or_callback(tiny_cfg):
    cfg = tiny_cfg()
    saved = stored(cfg, callbacks__spy={"_target_": "lightning.pytorch.callbacks.LearningRateMonitor"})
    with pytest.raises(UntrustedConfigError, match=r"callbacks\.spy is not one of the callbacks of this project's conf/callbacks/"):
        rebuild(saved, cfg, [], source="the config saved in x.ckpt")


def test_a_stored_config_never_turns_a_download_on(tiny_cfg):
    cfg = tiny_cfg("dataset=cifar10")
    merged = rebuild(stored(cfg, dataset__download=True, dataset__source__download=True), cfg, [])
    assert merged.dataset.download is False and merged.dataset.source.download is False
    asked = tiny_cfg("dataset=cifar10", "dataset.download=true")
    assert rebuild(stored(cfg), asked, ["dataset.download=true"]).dataset.source.download is True


@pytest.mark.parametrize("value", ["${oc.env:PATH}", "run-${now:%H-%M}", "${hydra:runtime.cwd}", "${${name}:PATH}",
                                   "${oc.select:task.name,${oc.env:HOME}}"])
def test_resolvers_that_read_the_environment_or_the_clock_are_refused(tiny_cfg, value, monkeypatch):
    monkeypatch.setenv("PATH_PROBE", "secret")
    cfg = tiny_cfg()
    with pytest.raises(UntrustedConfigError, match=r"x\.ckpt: node optimizer\.lr = .* calls the resolver"):
        rebuild(stored(cfg, optimizer__lr=value, name="oc.env"), cfg, [], source="x.ckpt")


def test_pure_interpolations_and_keys_the_command_line_replaces_pass(tiny_cfg):
    cfg = tiny_cfg("optimizer.lr=0.5")
    saved = stored(cfg, optimizer__lr="${oc.env:PATH}", seed="${oc.select:missing,7}")
    merged = rebuild(saved, cfg, ["optimizer.lr=0.5"])
    assert merged.optimizer.lr == 0.5 and merged.seed == 7
    assert merged.backbone.embed_dim == 36  # backbone_size and node interpolations resolve as before
