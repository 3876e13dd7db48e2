"""Swin Transformer backbone on timm's SwinTransformer (its sizes: the backbone registry)."""
from __future__ import annotations

import re

import torch
from timm.models.swin_transformer import SwinTransformer

from relvit.backbones.base import TokenBackbone

# Published size of Swin-T with a 1000-class head, millions (timm's model card; the paper rounds to 28M).
PUBLISHED_PARAMS_M = 28.3

# Tensors that timm rebuilds from the window geometry instead of loading them.
_DERIVED_BUFFERS = ("relative_position_index", "attn_mask")


class SwinBackbone(TokenBackbone):
    """timm SwinTransformer; the SSL heads see the last stage's tokens after the final norm.

    With Swin-T's sizes at 224 px those are 7 x 7 tokens of width 8 * ``embed_dim`` = 768.
    There is no CLS token: a classifier mean-pools the tokens. Swin encodes position only
    through the relative position bias inside its windows, so there is no absolute position
    embedding and ``add_pos_embed`` changes nothing.
    """

    pool_without_cls = "mean"

    def __init__(
        self,
        image_size: int = 224,
        *,
        embed_dim: int,
        depths: tuple[int, ...],
        num_heads: tuple[int, ...],
        window_size: int,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ):
        super().__init__()
        depths, num_heads = tuple(depths), tuple(num_heads)
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {depths} and num_heads {num_heads} must name the same number of stages")
        reduction = image_step(depths)
        if image_size % reduction:
            raise ValueError(f"Swin with {len(depths)} stages needs an image size divisible by {reduction}, got {image_size}")
        self.swin = SwinTransformer(
            img_size=image_size,
            patch_size=4,
            embed_dim=embed_dim,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            # timm's own drop_rate only feeds the classifier, which is left out here; the
            # original Swin's drop_rate is the dropout after the attention projection and the MLP
            proj_drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            num_classes=0,
        )
        self.embed_dim = self.swin.num_features
        self.grid_size = image_size // reduction
        self.has_cls_token = False

    def forward(self, images: torch.Tensor, add_pos_embed: bool = True) -> tuple[None, torch.Tensor]:
        """images [B, 3, H, W] -> (None, tokens [B, G*G, D]); ``add_pos_embed`` has no effect (see class)."""
        x = self.swin.forward_features(images)  # [B, G, G, D], channels last
        return None, x.flatten(1, 2)

    @staticmethod
    def remap_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Published Swin weights -> this module's names, the classifier head dropped.

        Takes timm's ``swin_tiny_patch4_window7_224`` checkpoint names, and also the original
        Microsoft release, whose stages end with their patch merging (timm starts the next stage
        with it) and which stores buffers timm derives from the window size.
        """
        microsoft_layout = "layers.0.downsample.reduction.weight" in state_dict
        out = {}
        for name, value in state_dict.items():
            if name.startswith("head.") or name.endswith(_DERIVED_BUFFERS):
                continue
            if microsoft_layout:
                name = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", name)
            out[f"swin.{name}"] = value
        return out


def image_step(depths: tuple[int, ...] | list[int]) -> int:
    """What the image size must be a multiple of: 4 px patches, then one 2x patch merging per stage
    after the first."""
    return 4 * 2 ** (len(depths) - 1)
