"""An ImageNet subset reads the ILSVRC CLS-LOC layout (tiny fixtures written here)."""
from __future__ import annotations

from pathlib import Path

import pytest

from relvit.data.sources.base import DataNotFoundError, FileSplit
from relvit.data.sources.imagenet_subset import ImageNetSubsetSource

from conftest import write_image

# ---------------------------------------------------------------- ImageNet subset (ILSVRC CLS-LOC)


def make_ilsvrc(root: Path) -> None:
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    for wnid, count in {"n01440764": 2, "n01443537": 1, "n02085620": 2, "n09999999": 1}.items():
        for k in range(count):
            write_image(data / "train" / wnid / f"{wnid}_{k}.JPEG", 8)
    rows = [("ILSVRC2012_val_00000004", "n02085620"), ("ILSVRC2012_val_00000001", "n01440764"),
            ("ILSVRC2012_val_00000002", "n09999999"), ("ILSVRC2012_val_00000003", "n01440764")]
    for image_id, _ in rows:
        write_image(data / "val" / f"{image_id}.JPEG", 8)
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "".join(f"{i},{w} 1 2 3 4 {w} 5 6 7 8\n" for i, w in rows)
    )


def test_imagenet_subset_keeps_the_listed_classes(tmp_path):
    make_ilsvrc(tmp_path)
    class_list = tmp_path / "classes.txt"
    class_list.write_text("n02085620 Chihuahua\n\nn01440764\n")
    source = ImageNetSubsetSource(root=tmp_path, class_list=class_list)
    source.prepare()

    train, test = source.load("train"), source.load("test")

    assert source.splits == ("train", "test")
    assert source.classes == ["n01440764", "n02085620"]
    assert isinstance(train, FileSplit)
    assert train.labels.tolist() == [0, 0, 1, 1]
    assert [Path(p).name for p in test.paths] == [
        "ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG", "ILSVRC2012_val_00000004.JPEG"
    ]
    assert test.labels.tolist() == [0, 0, 1]


def test_imagenet_subset_unknown_wnid_is_named(tmp_path):
    make_ilsvrc(tmp_path)
    class_list = tmp_path / "classes.txt"
    class_list.write_text("n01440764\nn01234567\n")
    with pytest.raises(ValueError, match=r"not ImageNet classes.*n01234567"):
        ImageNetSubsetSource(root=tmp_path, class_list=class_list).prepare()


@pytest.mark.parametrize("text, message", [("tench\n", "line 1: 'tench' is not a WordNet id"),
                                           ("n01440764\nn01440764\n", "line 2: n01440764 is listed twice"),
                                           ("\n", "lists no WordNet ids")])
def test_imagenet_subset_bad_class_list_is_explained(tmp_path, text, message):
    class_list = tmp_path / "classes.txt"
    class_list.write_text(text)
    with pytest.raises(ValueError, match=message):
        ImageNetSubsetSource(root=tmp_path, class_list=class_list).classes


def test_imagenet_subset_missing_data_error_says_where_what_and_how(tmp_path):
    class_list = tmp_path / "classes.txt"
    class_list.write_text("n01440764\n")
    with pytest.raises(DataNotFoundError) as err:
        ImageNetSubsetSource(root=tmp_path / "imagenet", class_list=class_list).prepare()
    message = str(err.value)
    assert "ImageNet" in message and str(tmp_path / "imagenet") in message
    assert "LOC_val_solution.csv" in message and "ILSVRC/Data/CLS-LOC/train/<wnid>" in message
    assert "How to get it" in message
