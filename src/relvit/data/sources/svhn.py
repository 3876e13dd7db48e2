"""SVHN (Netzer et al., 2011): 32 x 32 crops of house-number digits, held in memory.

Reads torchvision's layout, the official ``train_32x32.mat`` and ``test_32x32.mat`` directly under
``root``; the "extra" set is not used.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import SVHN

from relvit.data.download import download_file
from relvit.data.sources.base import DataNotFoundError, DataSource, InMemorySplit, data_root


class SVHNSource(DataSource):
    """SVHN cropped digits: 10 classes, 73,257 training and 26,032 test images."""

    name = "svhn"
    splits = ("train", "test")

    def __init__(self, root: str | os.PathLike, download: bool = False):
        self.root = data_root(root, "train_32x32.mat and test_32x32.mat")
        self.download = bool(download)

    @property
    def classes(self) -> list[str]:
        return [str(d) for d in range(10)]

    def _file(self, split: str) -> Path:
        return self.root / SVHN.split_list[split][1]

    def _not_found(self, missing: list[str]) -> DataNotFoundError:
        return DataNotFoundError(
            f"SVHN not found under {self.root}: {', '.join(self._file(s).name for s in missing)} missing.\n"
            f"Expected layout: {self._file('train')} and {self._file('test')} (torchvision's, the official "
            "cropped-digits release).\n"
            "How to get it: set dataset.download=true, or download them from http://ufldl.stanford.edu/housenumbers/"
        )

    def prepare(self) -> None:
        missing = [s for s in self.splits if not self._file(s).is_file()]
        if missing and not self.download:
            raise self._not_found(missing)
        for split in missing:
            url, _, md5 = SVHN.split_list[split]
            download_file(url, self._file(split), md5=md5)

    def load(self, split: str) -> InMemorySplit:
        self.check_split(split)
        if not self._file(split).is_file():
            raise self._not_found([split])
        from scipy.io import loadmat  # only SVHN and Flowers-102 need scipy

        mat = loadmat(self._file(split))
        # the release stores images as [H, W, C, N] and the digit 0 as label 10
        images = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)))
        labels = torch.from_numpy(mat["y"].astype(np.int64).reshape(-1) % 10)
        return InMemorySplit(images=images, labels=labels)
