"""Tiny ImageNet reads its folder or its zip (tiny fixtures written here)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from relvit.data.sources.base import DataNotFoundError, InMemorySplit
from relvit.data.sources.tiny_imagenet import TinyImageNetSource

from conftest import write_image

# ---------------------------------------------------------------- Tiny ImageNet

TINY_WNIDS = ["n02", "n01", "n03"]  # as in wnids.txt: not sorted


def make_tiny(root: Path) -> Path:
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    for wnid in TINY_WNIDS:
        for k in range(2):
            write_image(base / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", 64)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    # some Tiny ImageNet images are greyscale
    write_image(base / "train" / "n03" / "images" / "n03_1.JPEG", 64, (77,), mode="L")
    for k in range(3):
        write_image(base / "val" / "images" / f"val_{k}.JPEG", 64)
    (base / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn03\t0\t0\t10\t10\nval_1.JPEG\tn01\t1\t2\t30\t40\nval_2.JPEG\tn02\t0\t0\t63\t63\n"
    )
    write_image(base / "test" / "images" / "test_0.JPEG", 64)  # unlabelled: never read
    return base


def _check_tiny(source: TinyImageNetSource) -> None:
    train, test = source.load("train"), source.load("test")
    assert source.splits == ("train", "test")
    assert source.classes == ["n01", "n02", "n03"]
    assert isinstance(train, InMemorySplit)
    assert train.images.shape == (6, 3, 64, 64) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert (train.images[5, :, 0, 0].int() - 77).abs().max() <= 2  # grey turned into three equal channels
    assert test.images.shape == (3, 3, 64, 64)
    assert test.labels.tolist() == [2, 0, 1]


def test_tiny_imagenet_reads_the_unpacked_folder(tmp_path):
    make_tiny(tmp_path)
    source = TinyImageNetSource(root=tmp_path)
    source.prepare()
    _check_tiny(source)


def test_tiny_imagenet_unpacks_its_zip(tmp_path):
    base = make_tiny(tmp_path / "release")
    root = tmp_path / "data"
    root.mkdir()
    with zipfile.ZipFile(root / "tiny-imagenet-200.zip", "w") as zf:
        for path in sorted(base.rglob("*")):
            zf.write(path, path.relative_to(base.parent))
    source = TinyImageNetSource(root=root)
    source.prepare()

    assert sorted(p.name for p in root.iterdir()) == ["tiny-imagenet-200", "tiny-imagenet-200.zip"]
    _check_tiny(source)


def test_tiny_imagenet_missing_data_error_says_where_what_and_how(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        TinyImageNetSource(root=tmp_path).prepare()
    message = str(err.value)
    assert "Tiny ImageNet" in message and str(tmp_path / "tiny-imagenet-200") in message
    assert "val_annotations.txt" in message
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in message and "dataset.download=true" in message


def test_tiny_imagenet_annotation_with_unknown_wnid_is_named(tmp_path):
    base = make_tiny(tmp_path)
    with open(base / "val" / "val_annotations.txt", "a") as f:
        f.write("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match="line 4"):
        TinyImageNetSource(root=tmp_path).prepare()
