"""The backbone registry is the one place a size is written: the config files and the builders read it."""
from __future__ import annotations

import importlib

import pytest
from omegaconf import OmegaConf

from relvit.backbones.registry import VARIANTS, backbone_size, create_backbone
from relvit.errors import ConfigError

from conftest import CONF, compose_config

CONFIGS = sorted(p.stem for p in (CONF / "backbone").glob("*.yaml"))


def test_every_config_is_a_registered_variant_and_every_variant_has_a_config():
    assert set(CONFIGS) == set(VARIANTS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_the_registered_class_with_the_registered_sizes(tmp_path, name):
    backbone = OmegaConf.to_container(compose_config(tmp_path, [f"backbone={name}"]).backbone, resolve=True)
    module, cls_name = backbone["_target_"].rsplit(".", 1)
    variant = VARIANTS[name]
    assert getattr(importlib.import_module(module), cls_name) is variant.builder
    assert {k: backbone[k] for k in variant.sizes} == variant.sizes


def test_a_size_given_on_the_command_line_replaces_the_registry_one(tmp_path):
    cfg = compose_config(tmp_path, ["backbone=vit_small", "backbone.depth=2"])
    assert (cfg.backbone.depth, cfg.backbone.embed_dim) == (2, 384)


def test_create_backbone_builds_the_registered_sizes():
    vit = create_backbone("vit_tiny", image_size=16, patch_size=4)
    assert (vit.embed_dim, len(vit.vit.blocks), vit.grid_size) == (192, 12, 4)


def test_unknown_variant_or_size_names_the_valid_ones():
    with pytest.raises(ConfigError, match="valid ones: vit_tiny, vit_small"):
        backbone_size("vit_huge", "depth")
    with pytest.raises(ConfigError, match="has no size 'depths'; it has embed_dim, depth"):
        backbone_size("vit_small", "depths")
