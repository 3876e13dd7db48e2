"""The contract every backbone meets so that the SSL heads and the classifier can follow it."""
from __future__ import annotations

import torch
from torch import nn


class TokenBackbone(nn.Module):
    """An encoder that turns images into a square grid of patch tokens.

    Subclasses set:
      embed_dim      width D of the tokens handed to the heads
      grid_size      side G of the patch-token grid the SSL heads see (N = G * G tokens)
      has_cls_token  whether ``forward`` returns a CLS token
    and may override ``pool_without_cls``, how a classifier reads a backbone without CLS token
    ("flatten": all patch tokens, as the original ViT ablation; "mean": their average).
    """

    embed_dim: int
    grid_size: int
    has_cls_token: bool
    pool_without_cls: str = "flatten"

    @property
    def num_patches(self) -> int:
        return self.grid_size * self.grid_size

    def forward(self, images: torch.Tensor, add_pos_embed: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """images [B, 3, H, W] -> (cls [B, D] or None, patch tokens [B, G*G, D] in raster order).

        ``add_pos_embed=False`` leaves out absolute positional embeddings (RelViT upstream);
        the parameters still exist, so a later fine-tuning trains them.
        """
        raise NotImplementedError

    def position_embeddings(self) -> torch.Tensor | None:
        """Learned absolute position embeddings of the patch tokens [G*G, D], if any."""
        return None

    def patch_embedding_filters(self) -> torch.Tensor | None:
        """Filters of the first (patch) embedding [D, 3, p, p], if it is a convolution."""
        return None
