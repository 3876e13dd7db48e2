"""Flowers-102 keeps its official splits (tiny fixtures written here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from relvit.data.sources.base import DataNotFoundError, FileSplit
from relvit.data.sources.flowers import Flowers102Source

from conftest import write_image

# ---------------------------------------------------------------- Flowers-102


def make_flowers(root: Path) -> Path:
    base = root / "flowers-102"
    for i in range(1, 8):
        write_image(base / "jpg" / f"image_{i:05d}.jpg", (12, 9))
    # image i has class labels[i - 1], counted from 1 as in the release
    savemat(base / "imagelabels.mat", {"labels": np.array([[1, 102, 5, 5, 2, 1, 7]], dtype=np.uint8)})
    savemat(base / "setid.mat", {"trnid": np.array([[2, 1]]), "valid": np.array([[3, 4]]), "tstid": np.array([[5, 6, 7]])})
    return base


def test_flowers_keeps_the_official_three_splits(tmp_path):
    base = make_flowers(tmp_path)
    source = Flowers102Source(root=tmp_path)
    source.prepare()

    train = source.load("train")

    assert source.splits == ("train", "val", "test")
    assert len(source.classes) == 102
    assert isinstance(train, FileSplit)
    assert train.paths == [str(base / "jpg" / "image_00002.jpg"), str(base / "jpg" / "image_00001.jpg")]
    assert train.labels.tolist() == [101, 0]
    assert source.load("val").labels.tolist() == [4, 4]
    assert source.load("test").labels.tolist() == [1, 0, 6]


def test_flowers_missing_pieces_are_named(tmp_path):
    base = make_flowers(tmp_path)
    (base / "setid.mat").unlink()
    with pytest.raises(DataNotFoundError) as err:
        Flowers102Source(root=tmp_path).prepare()
    assert "Flowers-102" in str(err.value) and "setid.mat missing" in str(err.value)
    assert "dataset.download=true" in str(err.value)
