"""What a dataset source hands to the data module: one split at a time, in memory or as files."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from relvit.errors import UserError


class DataNotFoundError(UserError, RuntimeError):
    """The data is not where it was looked for; the message says where, what layout, and how to get it."""


@dataclass
class InMemorySplit:
    """A split small enough to hold as tensors: images uint8 [N, 3, H, W], labels int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())


@dataclass
class FileSplit:
    """A split streamed from disk: one image file per sample, decoded by DataLoader workers."""

    paths: list[str]
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())


class DataSource:
    """Base class of dataset sources.

    Subclasses set ``name`` and ``classes`` and implement ``load``; ``splits`` lists the splits the
    source has on disk ("train" always, "val" and "test" where the dataset ships them). The data
    module holds a validation split out of "train" when "val" is missing.
    """

    name: str = "dataset"
    splits: tuple[str, ...] = ("train",)

    @property
    def classes(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Make the data available (download where allowed) or raise DataNotFoundError. Called once,
        before any training work starts."""

    def load(self, split: str) -> InMemorySplit | FileSplit:
        raise NotImplementedError

    def check_split(self, split: str, available: tuple[str, ...] | None = None) -> None:
        """Refuse a split the source does not have, naming the ones it has."""
        available = tuple(available if available is not None else self.splits)
        if split not in available:
            raise ValueError(f"dataset {self.name!r} has no split {split!r}; it has {', '.join(available)}")
