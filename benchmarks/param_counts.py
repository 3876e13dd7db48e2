"""Print a markdown table of backbone sizes next to the published figures (docs/backbones.md).

Run: PYTHONPATH=src python benchmarks/param_counts.py
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from relvit.backbones.swin import PUBLISHED_PARAMS_M as SWIN_PUBLISHED
from relvit.backbones.swin import SwinBackbone
from relvit.backbones.t2t_vit import PUBLISHED_PARAMS_M as T2T_PUBLISHED
from relvit.backbones.t2t_vit import T2T_VIT_VARIANTS, T2TViTBackbone

# Published sizes with a 1000-class head at 224 px, millions: ViT from timm's DeiT model cards,
# Swin-T from timm's model card, T2T-ViT from the paper (ICCV 2021).
PUBLISHED_M = {"ViT-Tiny/16": 5.7, "ViT-Small/16": 22.1, "ViT-Base/16": 86.6, "Swin-T": SWIN_PUBLISHED, **T2T_PUBLISHED}
VIT_SIZES = {"Tiny": (192, 3), "Small": (384, 6), "Base": (768, 12)}  # width, heads; depth 12, MLP ratio 4


def _vit(image_size: int, patch_size: int, width: int, heads: int) -> VisionTransformer:
    return VisionTransformer(img_size=image_size, patch_size=patch_size, embed_dim=width, depth=12,
                             num_heads=heads, mlp_ratio=4, qkv_bias=True, num_classes=0)


def _rows() -> list[tuple[str, str, Callable[[], nn.Module]]]:
    """(name, input, builder) for every backbone of the table."""
    rows = []
    for image_size, patch_size in ((32, 4), (224, 16)):
        for size, (width, heads) in VIT_SIZES.items():
            rows.append((f"ViT-{size}/{patch_size}", f"{image_size} px",
                         lambda i=image_size, p=patch_size, w=width, h=heads: _vit(i, p, w, h)))
    rows.append(("Swin-T", "224 px", SwinBackbone))
    rows += [(variant, "224 px", lambda v=variant: T2TViTBackbone(v)) for variant in T2T_VIT_VARIANTS]
    return rows


def _fmt(count: int) -> str:
    return f"{count:,}"


def main() -> None:
    print("| backbone | input | tokens for the SSL heads | params, no heads | + 1000-class head "
          "| head + frozen tensors | published | deviation |")
    print("|---|---|---|--:|--:|--:|--:|--:|")
    for name, image, build in _rows():
        with torch.device("meta"):  # shapes only: counting needs no memory or initialisation
            model = build()
        params = sum(p.numel() for p in model.parameters())
        # tensors saved with the weights that are not trained (T2T-ViT's sinusoid and Performer features)
        param_names = {n for n, _ in model.named_parameters()}
        frozen = sum(t.numel() for n, t in model.state_dict().items() if n not in param_names)
        width = model.embed_dim
        with_head = params + width * 1000 + 1000
        if isinstance(model, VisionTransformer):
            side = model.patch_embed.grid_size[0]
            tokens = f"CLS + {side}x{side} x {width}"
        else:
            cls = "CLS + " if model.has_cls_token else ""
            tokens = f"{cls}{model.grid_size}x{model.grid_size} x {width}"
        published = PUBLISHED_M.get(name)
        if published is None:
            ref, dev = "-", "-"
        else:
            ref, dev = f"{published}M", f"{100 * ((with_head + frozen) / (published * 1e6) - 1):+.2f}%"
        print(f"| {name} | {image} | {tokens} | {_fmt(params)} | {_fmt(with_head)} "
              f"| {_fmt(with_head + frozen)} | {ref} | {dev} |")


if __name__ == "__main__":
    main()
