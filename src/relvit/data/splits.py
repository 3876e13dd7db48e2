"""Fixed-seed stratified splits."""
from __future__ import annotations

import torch


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hold ``fraction`` of every class out: returns sorted (kept, held_out) index tensors.

    Each class contributes ``round(fraction * count)`` samples (at least one while the class has two
    or more), chosen by a generator seeded with ``seed``, so the split is the same on every machine.
    """
    generator = torch.Generator().manual_seed(seed)
    held = []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        count = int(round(fraction * members.numel()))
        if members.numel() >= 2:
            count = min(max(count, 1), members.numel() - 1)
        order = torch.randperm(members.numel(), generator=generator)
        held.append(members[order[:count]])
    held_idx = torch.cat(held).sort().values
    keep = torch.ones(labels.numel(), dtype=torch.bool)
    keep[held_idx] = False
    return torch.nonzero(keep).flatten(), held_idx
