"""Your own class folders: classes and splits from the folders (tiny fixtures written here)."""
from __future__ import annotations

from pathlib import Path

import pytest

from relvit.data.sources.base import DataNotFoundError, FileSplit
from relvit.data.sources.image_folder import ImageFolderSource, decode_images

from conftest import write_hollow_png, write_image

# ---------------------------------------------------------------- your own image folders


def make_image_folder(root: Path, splits=("train", "val")) -> None:
    for split in splits:
        for name, count in {"dog": 2, "cat": 3}.items():
            for k in range(count):
                write_image(root / split / name / f"{k}.png", (10 + k, 7))
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def test_image_folder_reads_classes_and_splits_from_the_folders(tmp_path):
    make_image_folder(tmp_path)
    source = ImageFolderSource(root=tmp_path)
    source.prepare()

    train = source.load("train")

    assert source.splits == ("train", "val")
    assert source.classes == ["cat", "dog"]
    assert isinstance(train, FileSplit)
    assert train.labels.tolist() == [0, 0, 0, 1, 1]
    assert not any(p.endswith(".txt") for p in train.paths)
    assert source.load("val").labels.tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="no split 'test'"):
        source.load("test")


def test_image_folder_without_val_offers_train_only(tmp_path):
    make_image_folder(tmp_path, splits=("train",))
    assert ImageFolderSource(root=tmp_path).splits == ("train",)


def test_image_folder_class_missing_from_train_is_named(tmp_path):
    make_image_folder(tmp_path, splits=("train", "test"))
    write_image(tmp_path / "test" / "bird" / "0.png", 8)
    with pytest.raises(ValueError, match="bird"):
        ImageFolderSource(root=tmp_path).prepare()


def test_image_folder_empty_class_folder_is_named(tmp_path):
    make_image_folder(tmp_path, splits=("train",))
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="empty holds no images"):
        ImageFolderSource(root=tmp_path).prepare()


@pytest.mark.parametrize("make", [lambda root: None, lambda root: (root / "train").mkdir(parents=True)])
def test_image_folder_missing_or_empty_is_data_not_found(tmp_path, make):
    make(tmp_path)
    with pytest.raises(DataNotFoundError) as err:
        ImageFolderSource(root=tmp_path).prepare()
    assert str(tmp_path / "train") in str(err.value) and "<class>/<image>" in str(err.value)


def test_decoding_a_png_with_rows_missing_names_the_file(tmp_path):
    whole = write_image(tmp_path / "whole.png", 32)
    hollow = write_hollow_png(tmp_path / "hollow.png", 32, 32, 3)
    assert decode_images([str(whole)], 32).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"hollow\.png cannot be decoded \(its image data ends after 99 of the 1056 bytes"):
        decode_images([str(whole), hollow], 32)
