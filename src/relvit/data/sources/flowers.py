"""Oxford Flowers-102 (Nilsback & Zisserman, 2008): 8,189 photos of 102 flower species, read from files.

Reads torchvision's layout, ``<root>/flowers-102/`` holding ``jpg/image_NNNNN.jpg``,
``imagelabels.mat`` and ``setid.mat``, and keeps the official train / val / test split.
"""
from __future__ import annotations

import os

import torch
from torchvision.datasets import Flowers102

from relvit.data.download import download_file, extract_archive
from relvit.data.sources.base import DataNotFoundError, DataSource, FileSplit, data_root

_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
_IMAGES = ("102flowers.tgz", "52808999861908f626f3c1f4e79d11fa")
_LABELS = ("imagelabels.mat", "e0620be6f572b9609742df49c70aed4d")
_SETID = ("setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c")
# the keys of setid.mat that list each split's image ids
_SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}


class Flowers102Source(DataSource):
    """Flowers-102: 102 classes; 1,020 train, 1,020 val and 6,149 test images."""

    name = "flower102"
    splits = ("train", "val", "test")

    def __init__(self, root: str | os.PathLike, download: bool = False):
        self.root = data_root(root, "flowers-102/")
        self.base = self.root / "flowers-102"
        self.download = bool(download)

    @property
    def classes(self) -> list[str]:
        return list(Flowers102.classes)

    def _missing(self) -> list[str]:
        wanted = {"jpg/": self.base / "jpg", _LABELS[0]: self.base / _LABELS[0], _SETID[0]: self.base / _SETID[0]}
        return [name for name, path in wanted.items() if not path.exists()]

    def _not_found(self, missing: list[str]) -> DataNotFoundError:
        return DataNotFoundError(
            f"Flowers-102 not found under {self.base}: {', '.join(missing)} missing.\n"
            f"Expected layout: {self.base}/jpg/image_00001.jpg ... image_08189.jpg, {self.base}/{_LABELS[0]}, "
            f"{self.base}/{_SETID[0]} (torchvision's).\n"
            f"How to get it: set dataset.download=true, or download {_IMAGES[0]} (unpacked), {_LABELS[0]} "
            f"and {_SETID[0]} from {_URL} into {self.base}."
        )

    def prepare(self) -> None:
        missing = self._missing()
        archive = self.base / _IMAGES[0]
        # an archive already in place is unpacked even without download: true; only fetching needs it
        to_fetch = [m for m in missing if not (m == "jpg/" and archive.is_file())]
        if to_fetch and not self.download:
            raise self._not_found(missing)
        if "jpg/" in missing:
            if not archive.is_file():
                download_file(_URL + _IMAGES[0], archive, md5=_IMAGES[1])
            extract_archive(archive, self.base)
        for name, md5 in (_LABELS, _SETID):
            if name in missing:
                download_file(_URL + name, self.base / name, md5=md5)
        for split in self.splits:
            self.load(split)  # checks every listed image is on disk before training starts

    def load(self, split: str) -> FileSplit:
        self.check_split(split)
        missing = self._missing()
        if missing:
            raise self._not_found(missing)
        from scipy.io import loadmat  # only SVHN and Flowers-102 need scipy

        ids = loadmat(self.base / _SETID[0], squeeze_me=True)[_SPLIT_KEYS[split]].reshape(-1).tolist()
        labels_of = loadmat(self.base / _LABELS[0], squeeze_me=True)["labels"].reshape(-1)
        paths = [self.base / "jpg" / f"image_{i:05d}.jpg" for i in ids]
        absent = [p for p in paths if not p.is_file()]
        if absent:
            raise DataNotFoundError(
                f"Flowers-102 under {self.base} lacks {len(absent)} of the {split} images, e.g. {absent[0]}; "
                f"unpack {_IMAGES[0]} again (remove {self.base / 'jpg'} first)"
            )
        # image ids and the class numbers of imagelabels.mat both count from 1
        labels = torch.tensor([int(labels_of[i - 1]) - 1 for i in ids], dtype=torch.int64)
        return FileSplit(paths=[str(p) for p in paths], labels=labels)
