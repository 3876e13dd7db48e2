"""ImageNet-100: 100 ImageNet classes at full resolution, read from files.

Reads the layout the ImageNet-100 release on Kaggle comes in: ``<root>/Labels.json`` (wnid -> class
name), training images split over ``train.X1`` ... ``train.X4`` (any folder whose name starts with
"train") as ``<wnid>/<image>.JPEG``, and ``val.X/<wnid>/<image>.JPEG``. The val.X images, ImageNet's
own validation images of these classes, serve as our "test" split.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from relvit.data.sources.base import DataNotFoundError, FileSplit, IndexedFileSource, data_root, refuse_download
from relvit.data.sources.image_folder import labels_for, scan_class_folders


class ImageNet100Source(IndexedFileSource):
    """ImageNet-100: the classes of Labels.json (WordNet ids, sorted), about 1,300 training and 50 test images each."""

    name = "imagenet100"
    splits = ("train", "test")

    def __init__(self, root: str | os.PathLike, download: bool = False):
        self.root = data_root(root, "Labels.json, train.X1/ and val.X/")
        refuse_download(download, "ImageNet-100 cannot be downloaded automatically (ImageNet's terms must be accepted first)")

    def _not_found(self, what: str) -> DataNotFoundError:
        return DataNotFoundError(
            f"ImageNet-100 not found: {what}.\n"
            f"Expected layout: {self.root}/Labels.json (wnid -> name), {self.root}/train.X1 ... train.X4/<wnid>/*.JPEG "
            f"and {self.root}/val.X/<wnid>/*.JPEG.\n"
            "How to get it: download the ImageNet-100 release (Kaggle dataset 'ambityga/imagenet100') and unpack it "
            "there, or build it from ImageNet with the 100-class list of Tian et al. (CMC, 2019)."
        )

    @property
    def classes(self) -> list[str]:
        path = self.root / "Labels.json"
        if not path.is_file():
            raise self._not_found(f"{path} does not exist")
        labels = json.loads(path.read_text())
        if not isinstance(labels, dict) or not labels:
            raise ValueError(f"{path} must hold a JSON object mapping each wnid to its class name")
        return sorted(labels)

    def _build_index(self) -> dict[str, FileSplit]:
        class_ids = {wnid: i for i, wnid in enumerate(self.classes)}
        train_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and d.name.startswith("train"))
        if not train_dirs:
            raise self._not_found(f"no train* folder in {self.root}")
        test_dir = self.root / "val.X"
        if not test_dir.is_dir():
            raise self._not_found(f"{test_dir} does not exist")
        train: dict[str, list[Path]] = {}
        for d in train_dirs:
            for wnid, images in scan_class_folders(d).items():
                train.setdefault(wnid, []).extend(images)
        empty = sorted(set(class_ids) - set(train))
        if empty:
            raise self._not_found(
                f"{len(empty)} classes of Labels.json have no training images in {', '.join(d.name for d in train_dirs)}, "
                f"e.g. {empty[0]}"
            )
        where = str(self.root / "Labels.json")
        return {
            "train": labels_for(dict(sorted(train.items())), class_ids, self.root / "train*", where),
            "test": labels_for(scan_class_folders(test_dir), class_ids, test_dir, where),
        }
