"""A subset of ImageNet-1k (ILSVRC 2012) chosen by a list of WordNet ids, read from files.

Reads the ILSVRC CLS-LOC layout (as the Kaggle "ImageNet Object Localization Challenge" release
unpacks): ``<root>/ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG``, ``<root>/ILSVRC/Data/CLS-LOC/val/*.JPEG``
and ``<root>/LOC_val_solution.csv``. ImageNet's validation images serve as our "test" split.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import torch

from relvit.data.sources.base import DataNotFoundError, FileSplit, IndexedFileSource, data_root, refuse_download
from relvit.data.sources.image_folder import labels_for, list_images

_WNID = re.compile(r"n\d{8}")


class ImageNetSubsetSource(IndexedFileSource):
    """The ImageNet classes listed in ``class_list`` (label ids follow the sorted wnids), with their val images as test."""

    name = "imagenet_subset"
    splits = ("train", "test")

    def __init__(self, root: str | os.PathLike, class_list: str | os.PathLike, download: bool = False):
        self.root = data_root(root, "ILSVRC/ and LOC_val_solution.csv")
        if class_list is None:
            raise ValueError("dataset.class_list is not set: give a text file with one WordNet id (e.g. n01440764) a line")
        refuse_download(download, "ImageNet cannot be downloaded automatically (its terms must be accepted first)")
        self.class_list = Path(class_list).expanduser()
        self.data = self.root / "ILSVRC" / "Data" / "CLS-LOC"
        self._classes: list[str] | None = None

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            self._classes = self._read_class_list()
        return self._classes

    def _read_class_list(self) -> list[str]:
        if not self.class_list.is_file():
            raise DataNotFoundError(
                f"dataset.class_list: {self.class_list} does not exist; it should list the subset's WordNet ids, "
                "one a line (further words on a line, e.g. the class name, are ignored)"
            )
        wnids: list[str] = []
        for n, line in enumerate(self.class_list.read_text().splitlines(), 1):
            if not line.strip():
                continue
            wnid = line.split()[0]
            if not _WNID.fullmatch(wnid):
                raise ValueError(f"{self.class_list} line {n}: {wnid!r} is not a WordNet id like n01440764")
            if wnid in wnids:
                raise ValueError(f"{self.class_list} line {n}: {wnid} is listed twice")
            wnids.append(wnid)
        if not wnids:
            raise ValueError(f"{self.class_list} lists no WordNet ids")
        # sorted, as torchvision's ImageFolder orders them: the same classes get the same ids as in ImageNet-100
        return sorted(wnids)

    def _not_found(self, what: str) -> DataNotFoundError:
        return DataNotFoundError(
            f"ImageNet (ILSVRC 2012) not found: {what}.\n"
            f"Expected layout: {self.data}/train/<wnid>/*.JPEG, {self.data}/val/*.JPEG and "
            f"{self.root}/LOC_val_solution.csv (ImageId,PredictionString).\n"
            "How to get it: accept the terms of the Kaggle competition 'imagenet-object-localization-challenge', "
            "download its data and unpack it there."
        )

    def _build_index(self) -> dict[str, FileSplit]:
        class_ids = {wnid: i for i, wnid in enumerate(self.classes)}
        train_dir, val_dir, solution = self.data / "train", self.data / "val", self.root / "LOC_val_solution.csv"
        for path in (train_dir, val_dir, solution):
            if not path.exists():
                raise self._not_found(f"{path} does not exist")
        unknown = [w for w in class_ids if not (train_dir / w).is_dir()]
        if unknown:
            raise ValueError(
                f"{self.class_list} lists {len(unknown)} wnids that are not ImageNet classes in {train_dir}: "
                f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}"
            )
        found = {wnid: list_images(train_dir / wnid) for wnid in class_ids}
        empty = [wnid for wnid, images in found.items() if not images]
        if empty:
            raise self._not_found(f"{train_dir / empty[0]} holds no images")
        train = labels_for(found, class_ids, train_dir, str(self.class_list))

        paths, labels = [], []
        with open(solution, newline="") as f:
            rows = csv.DictReader(f)
            if not {"ImageId", "PredictionString"} <= set(rows.fieldnames or ()):
                raise ValueError(f"{solution} must start with the header ImageId,PredictionString")
            for row in rows:
                # the first token of PredictionString is the class; the rest are bounding boxes
                tokens = (row["PredictionString"] or "").split()
                if not tokens:
                    raise ValueError(f"{solution} line {rows.line_num}: no class in PredictionString")
                wnid = tokens[0]
                if wnid in class_ids:
                    path = val_dir / f"{row['ImageId']}.JPEG"
                    if not path.is_file():
                        raise self._not_found(f"{path}, listed in {solution}, does not exist")
                    paths.append(str(path))
                    labels.append(class_ids[wnid])
        order = sorted(range(len(paths)), key=paths.__getitem__)
        test = FileSplit(paths=[paths[i] for i in order], labels=torch.tensor([labels[i] for i in order], dtype=torch.int64))
        return {"train": train, "test": test}
