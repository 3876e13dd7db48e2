"""Frozen features of a split: the CLS token and the mean of the patch tokens of clean images."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from relvit.backbones.base import TokenBackbone

#: Which features a protocol reads: the CLS token, the mean patch token, or both (each reported).
FEATURE_KINDS = ("cls", "mean")
FEATURE_CHOICES = ("cls", "mean", "both")


def feature_kinds(choice: str, has_cls_token: bool) -> list[str]:
    """The kinds ``choice`` names, less ``cls`` for a backbone without one; ValueError on a bad name."""
    if choice not in FEATURE_CHOICES:
        raise ValueError(f"features must be one of {FEATURE_CHOICES}, got {choice!r}")
    kinds = list(FEATURE_KINDS) if choice == "both" else [choice]
    if not has_cls_token:
        if kinds == ["cls"]:
            raise ValueError("features=cls, but the backbone has no CLS token: use mean")
        kinds = [k for k in kinds if k != "cls"]
    return kinds


@dataclass
class Features:
    """Features of one split, on one device: ``by_kind[kind]`` [N, D] and ``labels`` [N]."""

    by_kind: dict[str, torch.Tensor]
    labels: torch.Tensor


@torch.no_grad()
def encode(backbone: TokenBackbone, images: torch.Tensor, add_pos_embed: bool) -> dict[str, torch.Tensor]:
    """images [B, 3, H, W] -> {"cls": [B, D] (if the backbone has one), "mean": [B, D]}."""
    cls, tokens = backbone(images, add_pos_embed=add_pos_embed)
    out = {"mean": tokens.mean(dim=1)}
    if cls is not None:
        out["cls"] = cls
    return out


@torch.no_grad()
def extract_features(backbone: TokenBackbone, datamodule, split: str, add_pos_embed: bool,
                     device: torch.device | str = "cpu") -> Features:
    """Features of every image of ``split`` (no augmentation, the evaluation transform), computed on
    ``device`` in evaluation mode; the backbone's train/eval mode is restored afterwards."""
    was_training = backbone.training
    backbone.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    labels = []
    try:
        for images, y in datamodule.eval_loader(split, device):
            x = datamodule.transform_batch(images.to(device), train=False)
            for kind, f in encode(backbone, x, add_pos_embed).items():
                chunks.setdefault(kind, []).append(f.float())
            labels.append(y.to(device))
    finally:
        backbone.train(was_training)
    return Features({k: torch.cat(v) for k, v in chunks.items()}, torch.cat(labels))
