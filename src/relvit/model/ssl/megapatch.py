"""Mega-patches: random rectangles of whole patches, each shrunk to one patch, tiled into a new image."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import roi_align

#: How a rectangle shrinks to one patch: roi_align's samples per output pixel, per axis, in each
#: mode ("area": enough to average every source pixel; "bilinear": one, plain bilinear resizing
#: with no antialiasing, as the original; rectangles never shrink below a patch, so it never clamps).
RESIZE_SAMPLING = {"area": -1, "bilinear": 1}


def random_cuts(batch: int, grid: int, side: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Edges of ``side`` bands on a ``grid``-cell axis, per image: LongTensor [B, side + 1].

    ``side - 1`` distinct cut positions are drawn uniformly from the ``grid - 1`` inner patch
    boundaries; the edges are 0, the sorted cuts, and ``grid``.
    """
    if not 1 <= side <= grid:
        raise ValueError(f"mega-patch side {side} must lie between 1 and the patch grid side {grid}")
    scores = torch.rand(batch, grid - 1, generator=generator, device=generator.device if generator else device)
    cuts = scores.argsort(dim=1)[:, : side - 1].sort(dim=1).values + 1  # [B, S-1], in 1..G-1
    first = torch.zeros(batch, 1, dtype=torch.long, device=cuts.device)
    last = torch.full((batch, 1), grid, dtype=torch.long, device=cuts.device)
    edges = torch.cat((first, cuts, last), dim=1)
    return edges if device is None else edges.to(device)


class MegaPatch(nn.Module):
    """Turns an image on a G x G patch grid into an S x S grid of mega-patches.

    Row and column cuts are drawn independently per image (``shared_cuts=True`` reproduces the
    original code, which cut the columns where it cut the rows). Every rectangle of whole patches is
    resized to one P x P patch (``resize``: "area" averages when it shrinks, "bilinear" is the
    original's plain bilinear resize): images [B, C, G*P, G*P] -> [B, C, S*P, S*P], with S*S tokens and
    S*S position classes.
    """

    def __init__(self, patch_size: int, side: int = 5, shared_cuts: bool = False, resize: str = "area"):
        super().__init__()
        if resize not in RESIZE_SAMPLING:
            raise ValueError(f"resize must be one of {list(RESIZE_SAMPLING)}, got {resize!r}")
        self.resize = resize
        self.patch_size = patch_size
        self.side = side
        self.shared_cuts = shared_cuts

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, c, h, w = images.shape
        p, s = self.patch_size, self.side
        grid = h // p
        if h != w or h % p:
            raise ValueError(f"mega-patches need square images cut into whole {p} px patches, got {h} x {w}")
        rows = random_cuts(b, grid, s, generator, images.device) * p  # [B, S+1] pixel edges
        cols = rows if self.shared_cuts else random_cuts(b, grid, s, generator, images.device) * p
        y1, y2 = rows[:, :-1, None].expand(b, s, s), rows[:, 1:, None].expand(b, s, s)  # [B, S, S]
        x1, x2 = cols[:, None, :-1].expand(b, s, s), cols[:, None, 1:].expand(b, s, s)
        index = torch.arange(b, device=images.device)[:, None, None].expand(b, s, s)
        boxes = torch.stack((index, x1, y1, x2, y2), dim=-1).reshape(-1, 5).to(images.dtype)  # [B*S*S, 5]
        tiles = roi_align(images, boxes, output_size=p, spatial_scale=1.0, sampling_ratio=RESIZE_SAMPLING[self.resize], aligned=True)  # [B*S*S, C, P, P]
        return tiles.view(b, s, s, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, s * p, s * p)
