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


class LabelBudget:
    """Which labelled training images a supervised run keeps: ``per_class`` images of every class, or
    ``fraction`` of every class (at least one), chosen by a generator seeded with ``seed``. Neither
    set keeps every image (the values are checked with the config: relvit.config)."""

    def __init__(self, per_class: int | None = None, fraction: float | None = None, seed: int = 0):
        self.per_class = per_class
        self.fraction = fraction
        self.seed = seed

    @property
    def active(self) -> bool:
        return self.per_class is not None or self.fraction is not None

    def select(self, labels: torch.Tensor) -> torch.Tensor:
        """Sorted indices [M] of the kept images among ``labels`` [N]."""
        generator = torch.Generator().manual_seed(self.seed)
        kept = []
        for cls in torch.unique(labels):
            members = torch.nonzero(labels == cls).flatten()
            if self.per_class is not None:
                if self.per_class > members.numel():
                    raise ValueError(f"data.labels_per_class={self.per_class} is invalid: class {int(cls)} has only "
                                     f"{members.numel()} training images")
                count = self.per_class
            else:
                assert self.fraction is not None  # the budget holds one of the two
                count = max(1, int(round(self.fraction * members.numel())))
            kept.append(members[torch.randperm(members.numel(), generator=generator)[:count]])
        return torch.cat(kept).sort().values
