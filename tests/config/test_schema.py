"""The schema: every shipped config passes it, and it refuses what no group declares."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf, open_dict

from relvit.config.checks import check_config
from relvit.config.schema import SCHEMAS
from relvit.config.schema_types import check_schema
from relvit.errors import ConfigError

from conftest import CONF, compose_config

#: trainer=gpu_per_job picks its GPU from the number of the Hydra job, which only a sweep has.
NEEDS_A_SWEEP = {("trainer", "gpu_per_job")}
CHOICES = [(group.name, p.stem) for group in sorted(CONF.iterdir()) if group.is_dir() and group.name != "hydra"
           for p in sorted(group.glob("*.yaml")) if (group.name, p.stem) not in NEEDS_A_SWEEP]


@pytest.mark.parametrize("group, name", CHOICES, ids=[f"{g}={n}" for g, n in CHOICES])
def test_every_shipped_config_passes_the_schema(tmp_path, group, name):
    cfg = compose_config(tmp_path, [f"{group}={name}"])
    check_schema(OmegaConf.to_container(cfg, resolve=True), SCHEMAS["train"])


def test_the_evaluate_config_passes_the_schema(tmp_path):
    cfg = compose_config(tmp_path, ["ckpt_path=x.ckpt"], config_name="evaluate")
    check_schema(OmegaConf.to_container(cfg, resolve=True), SCHEMAS["evaluate"])
    with pytest.raises(ConfigError, match=r"^ckpt_path is not a key of the config"):
        check_schema(OmegaConf.to_container(cfg, resolve=True), SCHEMAS["train"])


@pytest.mark.parametrize("key, value, message", [
    ("+trainer.profilr", "simple", r"^trainer\.profilr is not a key of the trainer group; valid keys: _target_, "),
    ("+callbacks.knn_monitor.kk", "3", r"^callbacks\.knn_monitor\.kk is not a key of callbacks\.knn_monitor; valid keys: "),
    ("+dataset.source.rot", "x", r"^dataset\.source\.rot is not a key of dataset\.source; valid keys: _target_, image_size"),
    ("+backbone.depths", "[2]", r"^backbone\.depths is not a key of the backbone group; valid keys: _target_, image_size"),
    ("task.add_pos_embed", "1", r"^task\.add_pos_embed=1 is invalid: true or false$"),
    ("data.pin_memory", "null", r"^data\.pin_memory=None is invalid: true or false$"),
    ("data.batch_size", "true", r"^data\.batch_size=True is invalid: an integer >= 1$"),
    ("optimizer.betas", "[0.9]", r"^optimizer\.betas=\[0\.9\] is invalid: 2 numbers"),
    ("logger.tensorboard._target_", "os.system", r"^logger\.tensorboard\._target_='os\.system' is invalid: lightning\.pytorch"),
    ("trainer.limit_val_batches", "1.5", r"^trainer\.limit_val_batches=1\.5 is invalid: null, a fraction in \[0, 1\]"),
])
def test_a_value_outside_its_declared_type_or_a_key_no_group_has_is_refused(tiny_cfg, key, value, message):
    with pytest.raises(ConfigError, match=message):
        check_config(tiny_cfg(f"{key}={value}"))


def test_a_part_chosen_by_its_target_takes_only_its_own_keys(tiny_cfg):
    cfg = tiny_cfg()
    with open_dict(cfg):
        cfg.backbone._target_ = "relvit.backbones.swin.SwinBackbone"  # the ViT's keys are not Swin's
    with pytest.raises(ConfigError, match=r"^backbone\.patch_size is not a key of the backbone group"):
        check_config(cfg)


def test_a_finetune_run_enters_the_check_once_per_phase_before_any_work(cli, monkeypatch):
    import relvit.config.checks

    from conftest import TINY

    calls = []
    real = relvit.config.checks.check_schema
    monkeypatch.setattr(relvit.config.checks, "check_schema", lambda config, schema: calls.append(config["task"]["name"])
                        or real(config, schema))
    # a debug run keeps no best checkpoint, so the second phase is checked but not run
    code, out, err = cli("train.py", *TINY, "debug=fast", 'finetune=["task=downstream"]')
    assert code == 0, err[-2000:]
    assert calls == ["upstream", "downstream"]
