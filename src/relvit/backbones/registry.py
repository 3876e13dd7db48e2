"""Every backbone variant by name, with its class, its sizes and its published size (like timm's registry).

The files of conf/backbone read their sizes from here through the ``backbone_size`` resolver
(``embed_dim: ${backbone_size:vit_small,embed_dim}``); benchmarks/param_counts.py and the tests
iterate ``VARIANTS``. A size is written here once. T2T-ViT's sizes stay in its own table
(``T2T_VIT_VARIANTS``), which its constructor reads by variant name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relvit.backbones.base import TokenBackbone
from relvit.backbones.swin import PUBLISHED_PARAMS_M as SWIN_PUBLISHED_M
from relvit.backbones.swin import SwinBackbone
from relvit.backbones.t2t_vit import PUBLISHED_PARAMS_M as T2T_PUBLISHED_M
from relvit.backbones.t2t_vit import T2T_VIT_VARIANTS, T2TViTBackbone
from relvit.backbones.vit import ViTBackbone
from relvit.errors import ConfigError


@dataclass(frozen=True)
class Variant:
    """One named backbone: ``builder(**sizes, image_size=..., ...)`` builds it.

    ``published_m``: parameters with a 1000-class head at 224 px (16 px patches for ViT), millions,
    where a published figure exists; ``title``: the name tables print.
    """

    builder: type[TokenBackbone]
    title: str
    sizes: dict[str, Any] = field(default_factory=dict)
    published_m: float | None = None


def _vit(title: str, width: int, heads: int, published_m: float) -> Variant:
    # depth 12 and MLP ratio 4 for every ViT size (Dosovitskiy et al.; DeiT)
    sizes = {"embed_dim": width, "depth": 12, "num_heads": heads, "mlp_ratio": 4.0}
    return Variant(ViTBackbone, title, sizes, published_m)


VARIANTS: dict[str, Variant] = {
    # published: timm's DeiT model cards
    "vit_tiny": _vit("ViT-Tiny", 192, 3, 5.7),
    "vit_small": _vit("ViT-Small", 384, 6, 22.1),
    "vit_base": _vit("ViT-Base", 768, 12, 86.6),
    "swin_tiny": Variant(SwinBackbone, "Swin-T",
                         {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7},
                         SWIN_PUBLISHED_M),
    **{name: Variant(T2TViTBackbone, name, {"variant": name}, T2T_PUBLISHED_M[name]) for name in T2T_VIT_VARIANTS},
}


def create_backbone(name: str, **kwargs: Any) -> TokenBackbone:
    """Build the variant ``name``; ``kwargs`` (image and patch size, rates) go to its constructor."""
    variant = VARIANTS[name]
    return variant.builder(**variant.sizes, **kwargs)


def backbone_size(name: str, key: str) -> Any:
    """The ``key`` size of variant ``name`` (the ``backbone_size`` resolver of the config files)."""
    if name not in VARIANTS:
        raise ConfigError(f"backbone_size: unknown backbone {name!r}; valid ones: {', '.join(VARIANTS)}")
    sizes = VARIANTS[name].sizes
    if key not in sizes:
        raise ConfigError(f"backbone_size: backbone {name!r} has no size {key!r}; it has {', '.join(sizes)}")
    value = sizes[key]
    return list(value) if isinstance(value, (list, tuple)) else value
