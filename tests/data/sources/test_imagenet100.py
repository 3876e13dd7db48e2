"""ImageNet-100 reads the Kaggle layout (tiny fixtures written here)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from relvit.data.sources.base import DataNotFoundError, FileSplit
from relvit.data.sources.imagenet100 import ImageNet100Source

from conftest import write_image

# ---------------------------------------------------------------- ImageNet-100


def make_imagenet100(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Labels.json").write_text(json.dumps({"n03": "three", "n01": "one", "n02": "two"}))
    layout = {"train.X1": {"n03": 2, "n01": 1}, "train.X2": {"n02": 3}, "val.X": {"n01": 1, "n02": 1, "n03": 2}}
    for folder, classes in layout.items():
        for wnid, count in classes.items():
            for k in range(count):
                write_image(root / folder / wnid / f"{wnid}_{k}.JPEG", 8)


def test_imagenet100_reads_train_parts_and_val_as_test(tmp_path):
    make_imagenet100(tmp_path)
    source = ImageNet100Source(root=tmp_path)
    source.prepare()

    train, test = source.load("train"), source.load("test")

    assert source.splits == ("train", "test")
    assert source.classes == ["n01", "n02", "n03"]
    assert isinstance(train, FileSplit)
    assert len(train) == 6 and train.labels.tolist() == [0, 1, 1, 1, 2, 2]
    assert all(Path(p).parent.name == source.classes[label] for p, label in zip(train.paths, train.labels.tolist()))
    assert test.labels.tolist() == [0, 1, 2, 2]
    assert all("val.X" in p for p in test.paths)


def test_imagenet100_class_folder_not_in_labels_json_is_named(tmp_path):
    make_imagenet100(tmp_path)
    write_image(tmp_path / "train.X2" / "n09" / "x.JPEG", 8)
    with pytest.raises(ValueError, match="n09"):
        ImageNet100Source(root=tmp_path).prepare()


def test_imagenet100_cannot_be_downloaded(tmp_path):
    with pytest.raises(ValueError, match="dataset.download=true"):
        ImageNet100Source(root=tmp_path, download=True)


def test_imagenet100_missing_data_error_says_where_what_and_how(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        ImageNet100Source(root=tmp_path).prepare()
    message = str(err.value)
    assert "ImageNet-100" in message and str(tmp_path / "Labels.json") in message
    assert "train.X1" in message and "val.X" in message and "How to get it" in message
