"""SVHN reads the official .mat files (tiny fixtures written here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from relvit.data.sources.base import DataNotFoundError
from relvit.data.sources.svhn import SVHNSource

# ---------------------------------------------------------------- SVHN


def make_svhn(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, labels in (("train", [1, 10, 5]), ("test", [10, 3])):
        x = np.zeros((32, 32, 3, len(labels)), dtype=np.uint8)
        for i in range(len(labels)):
            x[:, :, :, i] = [i, 100 + i, 200 + i]
        savemat(root / f"{name}_32x32.mat", {"X": x, "y": np.array(labels, dtype=np.uint8)[:, None]})


def test_svhn_reads_the_mat_files_and_maps_label_10_to_0(tmp_path):
    make_svhn(tmp_path)
    source = SVHNSource(root=tmp_path)
    source.prepare()

    train = source.load("train")

    assert source.splits == ("train", "test")
    assert source.classes == [str(d) for d in range(10)]
    assert train.images.shape == (3, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.images[2, :, 3, 4].tolist() == [2, 102, 202]
    assert train.labels.tolist() == [1, 0, 5]
    assert source.load("test").labels.tolist() == [0, 3]


def test_svhn_missing_data_error_says_where_what_and_how(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        SVHNSource(root=tmp_path).prepare()
    message = str(err.value)
    assert "SVHN" in message and str(tmp_path) in message
    assert "train_32x32.mat" in message and "dataset.download=true" in message
