"""CIFAR-10 and CIFAR-100 read torchvision's pickles and JPEG class folders (tiny fixtures written here)."""
from __future__ import annotations

import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from relvit.data.sources import cifar
from relvit.data.sources.base import DataNotFoundError, InMemorySplit
from relvit.data.sources.cifar import CIFAR10Source, CIFAR100Source

from conftest import write_image

# ---------------------------------------------------------------- CIFAR: torchvision's pickles


def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # protocol 2, as the original release was written (by Python 2)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _cifar_images(n: int, first: int) -> np.ndarray:
    """n flat CIFAR rows (3072 = 3 planes of 32 x 32); image i has planes first+i, first+i+1, first+i+2."""
    rows = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    for i in range(n):
        rows[i] = np.array([first + i, first + i + 1, first + i + 2], dtype=np.uint8)[:, None, None]
    return rows.reshape(n, 3072)


def make_cifar10_batches(root: Path) -> None:
    base = root / "cifar-10-batches-py"
    for b in range(1, 6):
        _pickle(base / f"data_batch_{b}", {"batch_label": f"batch {b}", "data": _cifar_images(2, 10 * b),
                                          "labels": [b, 9 - b], "filenames": ["a.png", "b.png"]})
    _pickle(base / "test_batch", {"data": _cifar_images(3, 100), "labels": [0, 1, 2]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(base / "batches.meta", {"label_names": names, "num_vis": 3072})


def test_cifar10_reads_torchvision_pickles(tmp_path):
    make_cifar10_batches(tmp_path)
    source = CIFAR10Source(root=tmp_path)
    source.prepare()

    train, test = source.load("train"), source.load("test")

    assert source.splits == ("train", "test")
    assert source.classes[:3] == ["airplane", "automobile", "bird"] and len(source.classes) == 10
    assert isinstance(train, InMemorySplit)
    assert train.images.shape == (10, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4]
    # rows are channel planes: image 0 of batch 1 is red 10, green 11, blue 12 everywhere
    assert train.images[0, :, 5, 7].tolist() == [10, 11, 12]
    assert train.images[9, :, 0, 0].tolist() == [51, 52, 53]
    assert len(test) == 3 and test.labels.tolist() == [0, 1, 2]


def test_cifar100_uses_fine_labels(tmp_path):
    base = tmp_path / "cifar-100-python"
    _pickle(base / "train", {"data": _cifar_images(4, 0), "fine_labels": [99, 0, 5, 42], "coarse_labels": [1, 1, 1, 1]})
    _pickle(base / "test", {"data": _cifar_images(2, 0), "fine_labels": [3, 4], "coarse_labels": [0, 0]})
    _pickle(base / "meta", {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": ["x"] * 20})
    source = CIFAR100Source(root=tmp_path)

    assert len(source.classes) == 100
    assert source.load("train").labels.tolist() == [99, 0, 5, 42]
    assert source.load("test").labels.tolist() == [3, 4]


def test_cifar_refuses_pickles_that_hold_more_than_arrays(tmp_path):
    make_cifar10_batches(tmp_path)
    _pickle(tmp_path / "cifar-10-batches-py" / "data_batch_3", {"data": print, "labels": []})
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle .*print"):
        CIFAR10Source(root=tmp_path).load("train")


def test_cifar_download_fetches_and_unpacks_the_archive_only_when_asked(tmp_path, monkeypatch):
    release = tmp_path / "release"
    make_cifar10_batches(release)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(release / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    fetched = []

    def fake_download(url, dest, md5=None):
        fetched.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(archive, dest)
        return dest

    monkeypatch.setattr(cifar, "download_file", fake_download)
    root = tmp_path / "data"

    with pytest.raises(DataNotFoundError):
        CIFAR10Source(root=root, download=False).prepare()
    assert fetched == []

    source = CIFAR10Source(root=root, download=True)
    source.prepare()
    assert fetched == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert len(source.load("train")) == 10
    source.prepare()  # already there: nothing fetched again
    assert len(fetched) == 1


def test_cifar_missing_data_error_says_where_what_and_how(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        CIFAR10Source(root=tmp_path / "nowhere").prepare()
    message = str(err.value)
    assert "CIFAR-10" in message
    assert str(tmp_path / "nowhere") in message
    assert "cifar-10-batches-py" in message and "train/<class>/<image>.jpg" in message
    assert "dataset.download=true" in message


def test_cifar_incomplete_pickles_are_reported(tmp_path):
    make_cifar10_batches(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_4 missing"):
        CIFAR10Source(root=tmp_path).prepare()


# ---------------------------------------------------------------- CIFAR: JPEG class folders

CIFAR_COLOURS = {"airplane": (250, 10, 10), "automobile": (10, 250, 10), "bird": (10, 10, 250)}


def make_cifar_jpegs(root: Path, with_test: bool) -> None:
    for name, colour in CIFAR_COLOURS.items():
        for k in range(2):
            write_image(root / "train" / name / f"{k:04d}.jpg", 32, colour)
        if with_test:
            write_image(root / "test" / name / "0000.jpg", 32, colour)


def test_cifar10_reads_jpeg_class_folders(tmp_path):
    make_cifar_jpegs(tmp_path, with_test=True)
    source = CIFAR10Source(root=tmp_path)
    source.prepare()

    train = source.load("train")

    assert source.splits == ("train", "test")
    assert source.classes == ["airplane", "automobile", "bird"]
    assert isinstance(train, InMemorySplit)
    assert train.images.shape == (6, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # JPEG is lossy: the solid colours come back within a few levels
    assert (train.images[4, :, 16, 16].int() - torch.tensor([10, 10, 250])).abs().max() <= 4
    assert source.load("test").labels.tolist() == [0, 1, 2]


def test_cifar_jpeg_folders_without_test_have_only_train(tmp_path):
    make_cifar_jpegs(tmp_path, with_test=False)
    assert CIFAR10Source(root=tmp_path).splits == ("train",)


def test_cifar_jpeg_of_the_wrong_size_is_named(tmp_path):
    make_cifar_jpegs(tmp_path, with_test=False)
    bad = write_image(tmp_path / "train" / "bird" / "big.jpg", 40)
    with pytest.raises(ValueError, match=f"{bad}.*40x40.*32x32"):
        CIFAR10Source(root=tmp_path).load("train")
