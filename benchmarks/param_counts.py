"""Print a markdown table of backbone sizes next to the published figures (docs/backbones.md).

Run: PYTHONPATH=src python benchmarks/param_counts.py
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from relvit.backbones.registry import VARIANTS, create_backbone
from relvit.backbones.vit import ViTBackbone


def _rows() -> list[tuple[str, str, float | None, Callable[[], nn.Module]]]:
    """(name, input, published size in millions or None, builder) for every variant of the registry;
    ViTs at 32 px / 4 px (the CIFAR setting) and at 224 px / 16 px (where the sizes were published)."""
    rows = []
    vits = [(name, v) for name, v in VARIANTS.items() if v.builder is ViTBackbone]
    for image_size, patch_size in ((32, 4), (224, 16)):
        for name, variant in vits:
            published = variant.published_m if patch_size == 16 else None
            rows.append((f"{variant.title}/{patch_size}", f"{image_size} px", published,
                         lambda n=name, i=image_size, p=patch_size: create_backbone(n, image_size=i, patch_size=p)))
    rows += [(v.title, "224 px", v.published_m, lambda n=name: create_backbone(n))
             for name, v in VARIANTS.items() if v.builder is not ViTBackbone]
    return rows


def _fmt(count: int) -> str:
    return f"{count:,}"


def main() -> None:
    print("| backbone | input | tokens for the SSL heads | params, no heads | + 1000-class head "
          "| head + frozen tensors | published | deviation |")
    print("|---|---|---|--:|--:|--:|--:|--:|")
    for name, image, published, build in _rows():
        with torch.device("meta"):  # shapes only: counting needs no memory or initialisation
            model = build()
        params = sum(p.numel() for p in model.parameters())
        # tensors saved with the weights that are not trained (T2T-ViT's sinusoid and Performer features)
        param_names = {n for n, _ in model.named_parameters()}
        frozen = sum(t.numel() for n, t in model.state_dict().items() if n not in param_names)
        width = model.embed_dim
        with_head = params + width * 1000 + 1000
        cls = "CLS + " if model.has_cls_token else ""
        tokens = f"{cls}{model.grid_size}x{model.grid_size} x {width}"
        if published is None:
            ref, dev = "-", "-"
        else:
            ref, dev = f"{published}M", f"{100 * ((with_head + frozen) / (published * 1e6) - 1):+.2f}%"
        print(f"| {name} | {image} | {tokens} | {_fmt(params)} | {_fmt(with_head)} "
              f"| {_fmt(with_head + frozen)} | {ref} | {dev} |")


if __name__ == "__main__":
    main()
