"""What a dataset source hands to the data module: one split at a time, in memory or as files."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from relvit.errors import UserError


class DataNotFoundError(UserError, RuntimeError):
    """The data is not where it was looked for; the message says where, what layout, and how to get it."""


def data_root(root: str | os.PathLike | None, holds: str) -> Path:
    """``dataset.root`` as a path; unset, a ValueError says what the folder should hold (``holds``)."""
    if root is None:
        raise ValueError(f"dataset.root is not set: give the folder that holds {holds}")
    return Path(root).expanduser()


def refuse_download(download: bool, why: str) -> None:
    """Refuse ``dataset.download=true`` for data that cannot be fetched automatically, saying ``why``."""
    if download:
        raise ValueError(f"dataset.download=true: {why}; set dataset.download=false and place the data under dataset.root")


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


class IndexedFileSource(DataSource):
    """A source whose splits are lists of files, found by one scan of the data on first use."""

    _index: dict[str, FileSplit] | None = None

    def _build_index(self) -> dict[str, FileSplit]:
        """Scan the data: split name -> its files and labels."""
        raise NotImplementedError

    def _scan(self) -> dict[str, FileSplit]:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def prepare(self) -> None:
        self._scan()

    def load(self, split: str) -> FileSplit:
        self.check_split(split)
        return self._scan()[split]
