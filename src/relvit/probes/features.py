"""Frozen features of a split: the CLS token and the mean of the patch tokens of clean images."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from relvit.backbones.base import TokenBackbone
from relvit.runs.distributed import gather_rows, process_group

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
                     device: torch.device | str = "cpu", sharded: bool = False) -> Features:
    """Features of every image of ``split`` (no augmentation, the evaluation transform), computed on
    ``device`` in evaluation mode; the backbone's train/eval mode is restored afterwards.

    ``sharded``: in a process group, each process encodes its own contiguous slice and every process
    gets all of them, in the split's order (the same features as one process computes, in 1/world
    of the time); it must then be called by every process."""
    shard = process_group() if sharded else (0, 1)
    was_training = backbone.training
    backbone.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    labels = []
    try:
        for images, y in datamodule.eval_loader(split, device, shard):
            x = datamodule.transform_batch(images.to(device), train=False)
            for kind, f in encode(backbone, x, add_pos_embed).items():
                chunks.setdefault(kind, []).append(f.float())
            labels.append(y.to(device))
    finally:
        backbone.train(was_training)
    # the same kinds on every process, even one whose slice is empty, so that the gathers pair up
    kinds = ["cls", "mean"] if backbone.has_cls_token else ["mean"]
    local = [torch.cat(chunks[k]) if k in chunks else torch.zeros(0, backbone.embed_dim, device=device) for k in kinds]
    y_all = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device)
    *gathered, y_all = gather_rows(*local, y_all) if sharded else (*local, y_all)
    return Features(dict(zip(kinds, gathered)), y_all)
