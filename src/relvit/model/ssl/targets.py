"""Self-supervised targets on a G x G grid of patch tokens numbered in raster order.

Token ``t`` sits at row ``t // G`` and column ``t % G``. Every function returns the targets of one
image; they depend only on the grid side, so the training code computes them once and broadcasts.
"""
from __future__ import annotations

import math

import torch

#: Relation class names in index order: L/C/R = left/same column/right, U/C/D = up/same row/down.
RELATION_CLASSES: tuple[str, ...] = ("LU", "CU", "RU", "LC", "CC", "RC", "LD", "CD", "RD")
NUM_RELATIONS = len(RELATION_CLASSES)


def _check_side(side: int) -> int:
    if not isinstance(side, int) or isinstance(side, bool) or side < 1:
        raise ValueError(f"grid side must be a positive integer, got {side!r}")
    return side


def grid_coordinates(side: int) -> torch.Tensor:
    """Row and column of every token: LongTensor [N, 2]."""
    side = _check_side(side)
    t = torch.arange(side * side)
    return torch.stack((t // side, t % side), dim=1)


def relation_targets(side: int) -> torch.Tensor:
    """Where token ``a`` lies relative to token ``b``, for every ordered pair: LongTensor [N, N].

    ``rel[a, b] = 3 * (sign(row_a - row_b) + 1) + (sign(col_a - col_b) + 1)``, so the class of
    ``(b, a)`` is the mirror class ``8 - rel[a, b]`` and the diagonal is ``CC``.
    """
    rc = grid_coordinates(side)
    delta = torch.sign(rc[:, None, :] - rc[None, :, :])  # [N, N, 2]
    return 3 * (delta[..., 0] + 1) + (delta[..., 1] + 1)


def position_targets(side: int) -> torch.Tensor:
    """The absolute position class of every token, its raster index: LongTensor [N]."""
    side = _check_side(side)
    return torch.arange(side * side)


def distance_targets(side: int) -> torch.Tensor:
    """Euclidean distance between the grid cells of every pair, mapped linearly so that 0 -> -1 and
    the largest distance on the grid -> +1: FloatTensor [N, N]. A 1 x 1 grid gives [[-1.]]."""
    rc = grid_coordinates(side).float()
    dist = torch.cdist(rc, rc)
    largest = dist.max()
    if largest == 0:
        return torch.full_like(dist, -1.0)
    return 2.0 * dist / largest - 1.0


def angle_targets(side: int) -> torch.Tensor:
    """Angle between the grid coordinates of every pair, as the original defines it: FloatTensor [N, N].

    Coordinates ``p = (col + G/2, row + G/2)`` (shifted by plus G/2, so none is the origin);
    ``m = arccos(p_a . p_b / (|p_a| |p_b| + 1e-4)) / pi`` with 0 on the diagonal; then
    ``m / max(m) * 2 - 1``, so the widest angle on the grid maps to +1. A 1 x 1 grid gives [[-1.]].
    """
    # float64: arccos is steep near 1, where collinear pairs sit
    p = grid_coordinates(side).flip(1).double() + side / 2  # [N, 2]: (col, row)
    norms = p.norm(dim=1)
    cosine = (p @ p.T) / (norms[:, None] * norms[None, :] + 1e-4)
    angle = torch.arccos(cosine.clamp(-1.0, 1.0)) / math.pi
    angle.fill_diagonal_(0.0)
    largest = angle.max()
    if largest == 0:
        return torch.full_like(angle, -1.0, dtype=torch.float32)
    return (angle / largest * 2.0 - 1.0).float()
