"""`python -m relvit.export`: a checkpoint's backbone as model.safetensors + config.json, which
timm (ViT, Swin) and this project's `pretrained=<dir>` (every backbone) load back."""
import json
import subprocess
import sys

import pytest
import timm
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from relvit.evaluation.export import export
from relvit.model.module import RelViTModule
from relvit.model.task import TaskSpec
from relvit.runs.checkpoints import load_pretrained
from relvit.runs.files import OutputDirError

from conftest import compose_config, subprocess_env

DOWNSTREAM = TaskSpec(name="downstream", supervised=True, relations=False, positions=False, monitor="val/acc", monitor_mode="max")
# tiny versions of each family on the 16 px digits (4 px patches)
BACKBONES = {
    "vit": ["backbone=vit_tiny", "backbone.depth=2", "backbone.embed_dim=36", "backbone.num_heads=3"],
    "vit_no_cls": ["backbone=vit_tiny", "backbone.depth=1", "backbone.embed_dim=36", "backbone.num_heads=3",
                   "backbone.class_token=false"],
    "swin": ["backbone=swin_tiny", "backbone.depths=[1,1]", "backbone.num_heads=[1,2]", "backbone.embed_dim=24",
             "backbone.window_size=2"],
    "t2t": ["backbone=t2t_vit_7"],
}


def fake_checkpoint(tmp_path, overrides, seed=0):
    """A checkpoint as train.py writes it (weights under backbone.*, the unresolved run config),
    without training: the export reads nothing else. Returns (path, backbone)."""
    cfg = compose_config(tmp_path / "train", overrides)
    torch.manual_seed(seed)
    backbone = instantiate(cfg.backbone).eval()
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": state, "relvit_config": OmegaConf.to_container(cfg, resolve=False)}, path)
    return path, backbone, cfg


def run_export(tmp_path, ckpt, out):
    cfg = compose_config(tmp_path / "export", [f"ckpt_path={ckpt}", f"out={out}"], config_name="export")
    return export(cfg, overrides=[])


@pytest.mark.parametrize("family", BACKBONES)
def test_export_then_pretrained_restores_the_backbone(tmp_path, family):
    ckpt, backbone, cfg = fake_checkpoint(tmp_path, BACKBONES[family])
    out = run_export(tmp_path, ckpt, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    torch.manual_seed(123)  # another initialisation, so equal outputs can only come from the file
    fresh = RelViTModule(instantiate(cfg.backbone), DOWNSTREAM, num_classes=10, optimizer=None, scheduler=None).eval()
    report = load_pretrained(fresh, out)
    assert not [n for n in report.missing if n.startswith("backbone.")] and not report.shape_mismatch
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want, got = backbone(images), fresh.backbone(images)
    for a, b in zip(want, got):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("family", ["vit", "vit_no_cls", "swin"])
def test_exported_backbone_loads_in_timm_with_the_same_outputs(tmp_path, family):
    ckpt, backbone, _ = fake_checkpoint(tmp_path, BACKBONES[family])
    out = run_export(tmp_path, ckpt, tmp_path / "exported")
    config = json.loads((out / "config.json").read_text())
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        cls, patches = backbone(images)
        want = patches if cls is None else torch.cat((cls[:, None], patches), dim=1)  # [B, T, D]
        # timm's own loader of an exported folder, and the documented equivalent with a file overlay
        for model in (
            timm.create_model(f"local-dir:{out}", pretrained=True),
            timm.create_model(config["architecture"], pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(out / "model.safetensors")), **config["model_args"]),
        ):
            got = model.eval().forward_features(images)
            assert torch.allclose(got.flatten(1, -2), want, atol=1e-5)


def test_t2t_export_names_no_timm_architecture(tmp_path):
    ckpt, _, _ = fake_checkpoint(tmp_path, BACKBONES["t2t"])
    config = json.loads((run_export(tmp_path, ckpt, tmp_path / "exported") / "config.json").read_text())
    assert "architecture" not in config
    assert config["relvit"]["backbone"]["_target_"] == "relvit.backbones.t2t_vit.T2TViTBackbone"


def test_export_never_overwrites(tmp_path):
    ckpt, _, _ = fake_checkpoint(tmp_path, BACKBONES["vit"])
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="not an empty directory"):
        run_export(tmp_path, ckpt, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_export_command_line(tmp_path):
    ckpt, _, _ = fake_checkpoint(tmp_path, BACKBONES["vit"])
    out = tmp_path / "cli_export"
    command = [sys.executable, "-m", "relvit.export", f"ckpt_path={ckpt}", f"out={out}", f"paths.root_dir={tmp_path}"]
    done = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "model.safetensors").is_file() and "local-dir:" in done.stdout
