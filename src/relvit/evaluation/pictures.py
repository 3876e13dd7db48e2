"""Callbacks that show what the encoder learned: position-embedding similarity and patch filters."""
from __future__ import annotations

from typing import cast

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from relvit.backbones.base import TokenBackbone
from relvit.runs.trackers import keeps_images, write_image

#: Anchor colours of the viridis colour map, from low to high.
VIRIDIS = torch.tensor([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=torch.float32) / 255
#: Pictures are scaled up (nearest neighbour) to at least this many pixels a side, to be readable.
MIN_SIDE = 320


def colour_map(values: torch.Tensor) -> torch.Tensor:
    """values in [0, 1], any shape [...] -> RGB [3, ...] through the viridis anchors (NaN as 0)."""
    x = values.nan_to_num(0.0).clamp(0, 1) * (len(VIRIDIS) - 1)
    low = x.floor().long().clamp(max=len(VIRIDIS) - 2)
    frac = (x - low).unsqueeze(-1)
    rgb = VIRIDIS[low] * (1 - frac) + VIRIDIS[low + 1] * frac  # [..., 3]
    return rgb.movedim(-1, 0)


def upscale(image: torch.Tensor, min_side: int = MIN_SIDE) -> torch.Tensor:
    """[3, H, W] -> [3, kH, kW] with whole-pixel (nearest) scaling, k the smallest factor reaching ``min_side``."""
    k = max(1, -(-min_side // min(image.shape[-2:])))
    return image.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)


def with_legend(image: torch.Tensor, low: str, high: str) -> torch.Tensor:
    """Appends a colour bar under ``image`` [3, H, W], labelled ``low`` and ``high`` at its ends."""
    w = image.shape[-1]
    bar = colour_map(torch.linspace(0, 1, w).expand(16, w))
    strip = Image.new("RGB", (w, 18), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    draw.text((2, 3), low, fill=(0, 0, 0))
    draw.text((w - 8 * len(high) - 2, 3), high, fill=(0, 0, 0))
    text = torch.from_numpy(np.array(strip)).permute(2, 0, 1).float() / 255
    return torch.cat([image, torch.ones(3, 4, w), bar, text], dim=-2)


def position_similarity_grid(pos_embed: torch.Tensor, side: int) -> torch.Tensor:
    """Cosine similarity of every patch's position embedding with all others, tiled and coloured.

    pos_embed [N, D] with N = side * side -> image [3, H, W]: one side x side map per patch, the maps
    laid out on the same side x side grid, viridis from -1 to 1, with a legend.
    """
    unit = F.normalize(pos_embed.detach().float().cpu(), dim=-1)
    sim = (unit @ unit.T).view(-1, side, side)  # [N, G, G]
    maps = colour_map((sim + 1) / 2).movedim(0, 1)  # [N, 3, G, G]
    maps = maps.repeat_interleave(4, dim=-2).repeat_interleave(4, dim=-1)
    grid = upscale(make_grid(maps, nrow=side, padding=2, pad_value=1.0))
    return with_legend(grid, "-1", "+1")


def filter_grid(weight: torch.Tensor, limit: int = 64) -> torch.Tensor:
    """The first ``limit`` patch-embedding filters [D, 3, p, p], each min-max scaled: image [3, H, W]."""
    w = weight.detach().float().cpu()[:limit]
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-8)
    k = max(1, 24 // w.shape[-1])  # each filter at least 24 px
    w = w.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
    return upscale(make_grid(w, nrow=8, padding=2, pad_value=1.0))


class EmbeddingImages(L.Callback):
    """After a validation, writes the position-embedding similarity grid and the patch filters
    (``embeddings/position_similarity``, ``embeddings/patch_filters``) to each logger that keeps
    pictures (TensorBoard, W&B, MLflow), each only when it changed since it was last written; the
    position embeddings only where the task adds them."""

    def __init__(self) -> None:
        self.last: dict[str, torch.Tensor] = {}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if keeps_images(lg)]
        if not loggers:
            return
        backbone = cast(TokenBackbone, pl_module.backbone)
        sources = {}
        pos = backbone.position_embeddings()
        task = getattr(pl_module, "task", None)
        if pos is not None and pos.shape[0] == backbone.num_patches and getattr(task, "add_pos_embed", True):
            sources["embeddings/position_similarity"] = (pos, lambda t: position_similarity_grid(t, backbone.grid_size))
        filters = backbone.patch_embedding_filters()
        if filters is not None and filters.ndim == 4 and filters.shape[1] == 3:
            sources["embeddings/patch_filters"] = (filters, filter_grid)
        for tag, (tensor, draw) in sources.items():
            snapshot = tensor.detach().float().cpu().clone()
            if tag in self.last and torch.equal(self.last[tag], snapshot):
                continue
            self.last[tag] = snapshot
            image = draw(snapshot)
            for logger in loggers:
                write_image(logger, tag, image, trainer.global_step)
