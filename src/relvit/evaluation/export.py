"""A checkpoint's backbone exported (`python -m relvit.export ckpt_path=<ckpt> [out=<new dir>]`).

Writes ``model.safetensors`` (the backbone alone, in timm's tensor names) and ``config.json`` (the
timm architecture and its arguments, as timm's own exports write it). ViT and Swin exports load in
timm with ``timm.create_model("local-dir:<out>", pretrained=True)``; every backbone loads back in
this project with ``pretrained=<out>``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from relvit.backbones.swin import SwinBackbone
from relvit.backbones.vit import ViTBackbone
from relvit.errors import ConfigError
from relvit.runs.checkpoints import EXPORTED_WEIGHTS, read_checkpoint, state_dict_of
from relvit.runs.files import OutputDirError, atomic_write
from relvit.runs.saved_config import rebuild, saved_run_config
from relvit.runs.trusted_config import trusted_resolved
from relvit.training.run import build_group

log = logging.getLogger(__name__)

#: Keys of export.yaml itself, which are not part of the training config.
OWN_KEYS = ("ckpt_path", "out")
#: A registered timm name per ViT width; ``model_args`` in config.json set every size explicitly.
VIT_NAMES = {192: "vit_tiny_patch16_224", 384: "vit_small_patch16_224", 768: "vit_base_patch16_224"}


def check_out(out: Path) -> None:
    """An export writes into a new or empty directory only."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputDirError(f"out={str(out)!r} is invalid: it exists and is not an empty directory; "
                             "an export never overwrites, so name a new directory")


def timm_module(backbone: nn.Module, backbone_cfg: DictConfig) -> tuple[nn.Module, dict[str, Any]] | None:
    """The timm model inside ``backbone`` and the ``(architecture, model_args)`` that rebuild it in
    timm, or None for a backbone timm does not have (T2T-ViT)."""
    if isinstance(backbone, ViTBackbone):
        vit: Any = backbone.vit  # timm's VisionTransformer
        args = dict(img_size=list(vit.patch_embed.img_size), patch_size=list(vit.patch_embed.patch_size),
                    embed_dim=vit.embed_dim, depth=len(vit.blocks), num_heads=vit.blocks[0].attn.num_heads,
                    mlp_ratio=vit.blocks[0].mlp.fc1.out_features / vit.embed_dim, qkv_bias=True,
                    class_token=backbone.has_cls_token, global_pool="token" if backbone.has_cls_token else "",
                    fc_norm=False, num_classes=0)
        return vit, {"architecture": VIT_NAMES.get(vit.embed_dim, "vit_base_patch16_224"), "model_args": args}
    if isinstance(backbone, SwinBackbone):
        swin: Any = backbone.swin  # timm's SwinTransformer
        # timm fits the window to small stages itself, so the configured window rebuilds the same model
        args = dict(img_size=list(swin.patch_embed.img_size), patch_size=list(swin.patch_embed.patch_size),
                    embed_dim=int(backbone_cfg.embed_dim), depths=[len(stage.blocks) for stage in swin.layers],
                    num_heads=[stage.blocks[0].attn.num_heads for stage in swin.layers],
                    window_size=int(backbone_cfg.window_size), num_classes=0)
        return swin, {"architecture": "swin_tiny_patch4_window7_224", "model_args": args}
    return None


def describe(backbone: nn.Module, cfg: DictConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors to write [names as timm has them where timm has the model] and config.json."""
    found = timm_module(backbone, cfg.backbone)
    size = int(cfg.backbone.get("image_size") or cfg.dataset.image_size)
    relvit = {"backbone": OmegaConf.to_container(cfg.backbone, resolve=True), "image_size": size,
              "patch_size": cfg.dataset.patch_size, "mean": list(cfg.dataset.mean), "std": list(cfg.dataset.std)}
    if found is None:
        state = backbone.state_dict()
        return state, {"relvit": relvit}
    inner: Any = found[0]
    timm_cfg = found[1]
    if getattr(backbone, "attention_mask", "none") != "none":
        log.warning("backbone.attention_mask=%s: timm's model attends everywhere, so it computes other "
                    "outputs from these weights; pretrained=<out> restores the masked model", backbone.attention_mask)
    pretrained_cfg = {"num_classes": 0, "input_size": [3, *inner.patch_embed.img_size], "fixed_input_size": True,
                      "mean": relvit["mean"], "std": relvit["std"], "interpolation": "bicubic", "crop_pct": 1.0,
                      "first_conv": "patch_embed.proj", "classifier": "head"}
    config = {**timm_cfg, "num_classes": 0, "num_features": backbone.embed_dim, "pretrained_cfg": pretrained_cfg,
              "relvit": relvit}
    return inner.state_dict(), config


def export(cfg: DictConfig, overrides: list[str] | None = None) -> Path:
    """Write the backbone of ``cfg.ckpt_path`` into ``cfg.out``; ``overrides`` are the command line's
    (read from Hydra by default) and replace saved keys, as in evaluation."""
    out = Path(str(cfg.out))
    check_out(out)
    content = read_checkpoint(cfg.ckpt_path)
    source = f"the config saved in {cfg.ckpt_path}"
    saved = saved_run_config(content, "ckpt_path", str(cfg.ckpt_path))
    if overrides is None:
        overrides = list(HydraConfig.get().overrides.task)
    run_cfg = rebuild(saved, cfg, overrides, OWN_KEYS, source=source)
    run_cfg.pretrained = run_cfg.resume = run_cfg.finetune = None
    run_cfg = trusted_resolved(run_cfg, source)
    megapatch = run_cfg.task.get("megapatch")
    # a mega-patch run's model sees the tiled image, side x side patches (as training builds it)
    backbone = build_group(run_cfg, "backbone", **(
        {"image_size": megapatch.side * run_cfg.dataset.patch_size} if megapatch else {}))
    if megapatch:
        run_cfg.backbone.image_size = megapatch.side * run_cfg.dataset.patch_size
    weights = {k.removeprefix("backbone."): v for k, v in state_dict_of(content).items() if k.startswith("backbone.")}
    try:
        backbone.load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigError(f"ckpt_path={str(cfg.ckpt_path)!r}: its backbone does not match {source} with the "
                          f"overrides {overrides}: {str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}") from None
    state, config = describe(backbone, run_cfg)
    config["relvit"]["checkpoint"] = str(cfg.ckpt_path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    atomic_write(out / EXPORTED_WEIGHTS, lambda f: f.write(_safetensors_bytes(tensors)))
    atomic_write(out / "config.json", lambda f: json.dump(config, f, indent=2), binary=False)
    how = (f'timm.create_model("local-dir:{out}", pretrained=True) or ' if "architecture" in config else "")
    print(f"\nexported {len(tensors)} tensors of {type(backbone).__name__} to {out}\nload with {how}"
          f"python train.py pretrained={out}\n", flush=True)
    return out


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata={"format": "pt"})
