"""Callbacks that show what the encoder learned: position-embedding similarity and patch filters."""
from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid


def position_similarity_grid(pos_embed: torch.Tensor, side: int) -> torch.Tensor:
    """Cosine similarity of every patch's position embedding with all others, tiled.

    pos_embed [N, D] with N = side * side -> image [3, H, W]: one side x side map per patch,
    the maps laid out on the same side x side grid.
    """
    unit = F.normalize(pos_embed.detach().float(), dim=-1)
    sim = (unit @ unit.T).view(-1, 1, side, side)  # [N, 1, G, G]
    sim = (sim + 1) / 2  # [-1, 1] -> [0, 1]
    return make_grid(sim, nrow=side, padding=1, pad_value=1.0)


def filter_grid(weight: torch.Tensor, limit: int = 64) -> torch.Tensor:
    """The first ``limit`` patch-embedding filters [D, 3, p, p], each min-max scaled: image [3, H, W]."""
    w = weight.detach().float()[:limit]
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-8)
    return make_grid(w, nrow=8, padding=1, pad_value=1.0)


class EmbeddingImages(L.Callback):
    """At the end of each validation, writes the position-embedding similarity grid and the patch
    filters to TensorBoard (``embeddings/position_similarity``, ``embeddings/patch_filters``)."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        backbone = pl_module.backbone
        images = {}
        pos = backbone.position_embeddings()
        if pos is not None and pos.shape[0] == backbone.num_patches:
            images["embeddings/position_similarity"] = position_similarity_grid(pos, backbone.grid_size)
        filters = backbone.patch_embedding_filters()
        if filters is not None and filters.ndim == 4 and filters.shape[1] == 3:
            images["embeddings/patch_filters"] = filter_grid(filters)
        for logger in loggers:
            for tag, image in images.items():
                logger.experiment.add_image(tag, image.cpu(), global_step=trainer.global_step)
