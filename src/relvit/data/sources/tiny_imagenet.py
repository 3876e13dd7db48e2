"""Tiny ImageNet (the CS231n release): 200 ImageNet classes at 64 x 64, held in memory.

Reads ``<root>/tiny-imagenet-200/`` as the official zip unpacks it, and unpacks
``<root>/tiny-imagenet-200.zip`` when only the zip is there. The official test images come without
labels, so the official val split (50 images a class) serves as our "test" split.
"""
from __future__ import annotations

import logging
import os

import torch

from relvit.data.download import download_file, extract_archive
from relvit.data.sources.base import (
    DataNotFoundError,
    DataSource,
    FileSplit,
    InMemorySplit,
    data_root,
)
from relvit.data.sources.image_folder import decode_images, list_images

log = logging.getLogger(__name__)

_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
_FOLDER = "tiny-imagenet-200"
_SIZE = 64


class TinyImageNetSource(DataSource):
    """Tiny ImageNet: 200 classes (WordNet ids, sorted), 100,000 training and 10,000 test images."""

    name = "tiny_imagenet"
    splits = ("train", "test")

    def __init__(self, root: str | os.PathLike, download: bool = False):
        self.root = data_root(root, f"{_FOLDER}/ or {_FOLDER}.zip")
        self.base = self.root / _FOLDER
        self.download = bool(download)

    def _not_found(self, what: str) -> DataNotFoundError:
        return DataNotFoundError(
            f"Tiny ImageNet not found: {what}.\n"
            f"Expected layout: {self.base}/wnids.txt, {self.base}/train/<wnid>/images/*.JPEG, "
            f"{self.base}/val/images/*.JPEG and {self.base}/val/val_annotations.txt (the official zip, unpacked), "
            f"or the zip itself at {self.root / (_FOLDER + '.zip')}.\n"
            f"How to get it: set dataset.download=true to download {_URL}, or put the zip in {self.root}."
        )

    def _check(self) -> None:
        for path in (self.base / "wnids.txt", self.base / "train", self.base / "val" / "val_annotations.txt"):
            if not path.exists():
                raise self._not_found(f"{path} does not exist")

    @property
    def classes(self) -> list[str]:
        self._check()
        # sorted, as torchvision's ImageFolder orders them, rather than wnids.txt's order
        return sorted(line.strip() for line in (self.base / "wnids.txt").read_text().splitlines() if line.strip())

    def prepare(self) -> None:
        if not self.base.exists():
            archive = self.root / f"{_FOLDER}.zip"
            if not archive.is_file():
                if not self.download:
                    raise self._not_found(f"neither {self.base} nor {archive} exists")
                download_file(_URL, archive, md5=_MD5)
            extract_archive(archive, self.root)
        for split in self.splits:
            self._files(split)  # checks every class and annotation before any image is decoded

    def _files(self, split: str) -> FileSplit:
        class_ids = {wnid: i for i, wnid in enumerate(self.classes)}
        paths, labels = [], []
        if split == "train":
            for wnid, label in class_ids.items():
                folder = self.base / "train" / wnid / "images"
                images = list_images(folder) if folder.is_dir() else []
                if not images:
                    raise self._not_found(f"class {wnid} of wnids.txt has no images in {folder}")
                paths += [str(p) for p in images]
                labels += [label] * len(images)
        else:
            annotations = self.base / "val" / "val_annotations.txt"
            for n, line in enumerate(annotations.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) < 2 or fields[1] not in class_ids:
                    raise ValueError(
                        f"{annotations} line {n}: expected '<file>\\t<wnid>\\t...' with a wnid of wnids.txt, got {line!r}"
                    )
                path = self.base / "val" / "images" / fields[0]
                if not path.is_file():
                    raise self._not_found(f"{path}, listed in {annotations}, does not exist")
                paths.append(str(path))
                labels.append(class_ids[fields[1]])
        return FileSplit(paths=paths, labels=torch.tensor(labels, dtype=torch.int64))

    def load(self, split: str) -> InMemorySplit:
        self.check_split(split)
        files = self._files(split)
        log.info("decoding %d images of Tiny ImageNet's %s split", len(files), split)
        return InMemorySplit(images=decode_images(files.paths, _SIZE), labels=files.labels)
