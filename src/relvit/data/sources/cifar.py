"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009): 32 x 32 colour images, held in memory.

Two layouts are read, whichever is under ``root``: torchvision's (the official pickled batches in
``cifar-10-batches-py/`` or ``cifar-100-python/``), or JPEG/PNG folders ``train/<class>/<image>``
with optional ``test/`` (and ``val/``) alike, the form the CIFAR-10 JPEG release comes in.
"""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from relvit.data.download import download_file, extract_archive
from relvit.data.sources.base import DataNotFoundError, DataSource, InMemorySplit, data_root
from relvit.data.sources.image_folder import ImageFolderSource, decode_images

log = logging.getLogger(__name__)

_SIZE = 32
#: Decoded JPEG/PNG splits of this process, by folder: a comparison runs its many phases in one process,
#: and decoding 50,000 files again for every phase would cost more than some of the phases.
_DECODED: dict[tuple[str, tuple[str, ...]], InMemorySplit] = {}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batch dictionaries and nothing else: unpickling arbitrary objects can run code."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"),  # what the original Python 2 files name
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),  # a numpy number, should a label be stored as one
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: a CIFAR batch file holds only arrays")
        return super().find_class(module, name)


def _read_batch(path: Path) -> dict:
    with open(path, "rb") as f:
        # latin1 turns the Python 2 byte strings of the original files into str keys and raw array bytes
        batch = _BatchUnpickler(f, encoding="latin1").load()
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


class _CIFARSource(DataSource):
    _torchvision: type[CIFAR10]
    _label_key: str
    _title: str

    def __init__(self, root: str | os.PathLike, download: bool = False):
        self.root = data_root(root, f"{self._torchvision.base_folder}/")
        self.download = bool(download)
        self._folders = ImageFolderSource(self.root)

    @property
    def _batches(self) -> Path:
        return self.root / self._torchvision.base_folder

    def _layout(self) -> str:
        """'pickle' or 'folders', whichever is on disk (the original pickles win when both are)."""
        if self._batches.is_dir():
            names = [n for n, _ in self._torchvision.train_list + self._torchvision.test_list]
            missing = [n for n in names + [self._torchvision.meta["filename"]] if not (self._batches / n).is_file()]
            if missing:
                raise DataNotFoundError(
                    f"{self._title} is incomplete at {self._batches}: {', '.join(missing)} missing. "
                    f"Remove the folder and set dataset.download=true, or unpack {self._torchvision.filename} again."
                )
            return "pickle"
        if (self.root / "train").is_dir():
            return "folders"
        raise self._not_found()

    def _not_found(self) -> DataNotFoundError:
        return DataNotFoundError(
            f"{self._title} not found under {self.root}.\n"
            f"Expected layout, either of:\n"
            f"  {self._batches}/  (torchvision's, the official python release)\n"
            f"  {self.root}/train/<class>/<image>.jpg and optionally {self.root}/test/<class>/<image>.jpg\n"
            f"How to get it: set dataset.download=true to download {self._torchvision.url}, "
            f"or put {self._torchvision.filename} in {self.root}, or unpack JPEG folders there."
        )

    @property  # read from the data on disk (the base class's is a fixed class attribute)
    def splits(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._layout() == "pickle":
            return ("train", "test")
        return self._folders.splits

    @property
    def classes(self) -> list[str]:
        if self._layout() == "pickle":
            meta = self._torchvision.meta
            return list(_read_batch(self._batches / meta["filename"])[meta["key"]])
        return self._folders.classes

    def prepare(self) -> None:
        archive = self.root / self._torchvision.filename
        if not (self._batches.exists() or (self.root / "train").is_dir()):
            if not archive.is_file():
                if not self.download:
                    raise self._not_found()
                download_file(self._torchvision.url, archive, md5=self._torchvision.tgz_md5)
            extract_archive(archive, self.root)
        if self._layout() == "folders":
            self._folders.prepare()  # checks every class folder before any decoding

    def load(self, split: str) -> InMemorySplit:
        self.check_split(split)
        if self._layout() == "pickle":
            files = self._torchvision.train_list if split == "train" else self._torchvision.test_list
            batches = [_read_batch(self._batches / name) for name, _ in files]
            data = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, _SIZE, _SIZE)
            labels = np.concatenate([np.asarray(b[self._label_key]) for b in batches])
            return InMemorySplit(images=torch.from_numpy(data), labels=torch.from_numpy(labels.astype(np.int64)))
        files = self._folders.load(split)
        key = (str((self.root / split).resolve()), tuple(files.paths))
        if key not in _DECODED:
            log.info("decoding %d images of %s", len(files), self.root / split)
            for stale in [k for k in _DECODED if Path(k[0]).parent != Path(key[0]).parent]:
                del _DECODED[stale]  # one dataset at a time: a process that changes dataset keeps no stale memory
            _DECODED[key] = InMemorySplit(images=decode_images(files.paths, _SIZE), labels=files.labels)
        return _DECODED[key]


class CIFAR10Source(_CIFARSource):
    """CIFAR-10: 10 classes, 50,000 training and 10,000 test images."""

    name = "cifar10"
    _torchvision = CIFAR10
    _label_key = "labels"
    _title = "CIFAR-10"


class CIFAR100Source(_CIFARSource):
    """CIFAR-100: 100 classes (the fine labels), 50,000 training and 10,000 test images."""

    name = "cifar100"
    _torchvision = CIFAR100
    _label_key = "fine_labels"
    _title = "CIFAR-100"
