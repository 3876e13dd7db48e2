"""Images kept one folder per class, ``<root>/<split>/<class>/<image>``: the user's own data, and the
folder readers the dataset sources stored that way share."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from relvit.data.sources.base import DataNotFoundError, DataSource, FileSplit, data_root, refuse_download
from relvit.data.verify import png_rows_problem
from relvit.runs.progress import progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SPLITS = ("train", "val", "test")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted so that sample order never depends on the file system."""
    return sorted(
        p for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def scan_class_folders(folder: Path) -> dict[str, list[Path]]:
    """Map each class folder under ``folder`` (sorted by name) to its images; a class without images is an error."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataNotFoundError(
            f"no class folders in {folder}: expected {folder}/<class>/<image>, one folder per class"
        )
    found = {}
    for d in class_dirs:
        images = list_images(d)
        if not images:
            raise DataNotFoundError(
                f"class folder {d} holds no images; supported extensions: {', '.join(IMAGE_EXTENSIONS)} "
                "(images must lie directly in the class folder). Remove the folder or add its images."
            )
        found[d.name] = images
    return found


def labels_for(found: dict[str, list[Path]], class_ids: dict[str, int], folder: Path, classes_from: str) -> FileSplit:
    """A FileSplit of the images in ``found``, labelled by ``class_ids``; a class unknown to it is an error."""
    unknown = sorted(set(found) - set(class_ids))
    if unknown:
        raise ValueError(
            f"{folder} has class folders that are not among the {len(class_ids)} classes of {classes_from}: "
            f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}"
        )
    paths, labels = [], []
    for name, images in found.items():
        paths += [str(p) for p in images]
        labels += [class_ids[name]] * len(images)
    return FileSplit(paths=paths, labels=torch.tensor(labels, dtype=torch.int64))


def decode_images(paths: list[str], size: int) -> torch.Tensor:
    """Decode image files of ``size`` x ``size`` pixels into one uint8 tensor [N, 3, size, size] (grey becomes RGB).

    PIL, one file after another: on 2 cores this beats threads, and 50,000 32 px JPEGs take about 6 s.
    """
    out = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    for i, path in enumerate(progress(paths, len(paths), "decoding images once", "img")):
        try:
            with Image.open(path) as im:
                if im.size != (size, size):
                    raise ValueError(f"{path} is {im.size[0]}x{im.size[1]} pixels; this dataset's images are {size}x{size}")
                out[i] = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
                problem = png_rows_problem(path) if im.format == "PNG" else None
            if problem:  # PIL leaves the rows a PNG lacks black
                raise ValueError(f"{path} cannot be decoded ({problem}); remove or replace the file")
        except OSError as err:  # truncated, corrupt or not an image
            raise ValueError(f"{path} cannot be decoded ({type(err).__name__}: {err}); remove or replace the file") from None
    return out


class ImageFolderSource(DataSource):
    """Your own images in ``<root>/train/<class>/<image>`` and optionally ``val/`` and ``test/`` alike.

    Classes are train's folder names, sorted; that order gives the label ids. Images are decoded later,
    by the loader workers.
    """

    name = "image_folder"

    def __init__(self, root: str | os.PathLike, download: bool = False):
        self.root = data_root(root, "train/<class>/<image>")
        refuse_download(download, "image_folder is your own data and cannot be downloaded")
        self._index: dict[str, FileSplit] | None = None
        self._classes: list[str] = []

    def _scan(self) -> dict[str, FileSplit]:
        if self._index is not None:
            return self._index
        train = self.root / "train"
        if not train.is_dir() or not any(train.iterdir()):
            raise DataNotFoundError(
                f"image_folder: no training images at {train}.\n"
                f"Expected layout: {self.root}/train/<class>/<image> (extensions {', '.join(IMAGE_EXTENSIONS)}), "
                "and optionally val/<class>/<image> and test/<class>/<image> alike.\n"
                "How to get it: put your images there, one folder per class, or point dataset.root at the "
                "folder that holds train/."
            )
        found = scan_class_folders(train)
        self._classes = list(found)
        class_ids = {name: i for i, name in enumerate(self._classes)}
        index = {"train": labels_for(found, class_ids, train, str(train))}
        for split in SPLITS[1:]:
            if (self.root / split).is_dir():
                # a class missing from train would have no label id the model was trained on
                index[split] = labels_for(scan_class_folders(self.root / split), class_ids, self.root / split, str(train))
        self._index = index
        return index

    @property  # read from the data on disk (the base class's is a fixed class attribute)
    def splits(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(s for s in SPLITS if s in self._scan())

    @property
    def classes(self) -> list[str]:
        self._scan()
        return self._classes

    def prepare(self) -> None:
        self._scan()

    def load(self, split: str) -> FileSplit:
        index = self._scan()
        self.check_split(split, tuple(index))
        return index[split]
