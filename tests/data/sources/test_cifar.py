"""Every dataset source reads its real on-disk layout (tiny fixtures written here), and every dataset
config composes with Hydra into the facts of its dataset."""
from __future__ import annotations

import json
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from PIL import Image
from scipy.io import savemat

from relvit.data.sources import cifar
from relvit.data.sources.base import DataNotFoundError, FileSplit, InMemorySplit
from relvit.data.sources.cifar import CIFAR10Source, CIFAR100Source
from relvit.data.sources.flowers import Flowers102Source
from relvit.data.sources.image_folder import ImageFolderSource
from relvit.data.sources.imagenet100 import ImageNet100Source
from relvit.data.sources.imagenet_subset import ImageNetSubsetSource
from relvit.data.sources.svhn import SVHNSource
from relvit.data.sources.tiny_imagenet import TinyImageNetSource

CONF = Path(__file__).resolve().parents[2] / "conf"


def write_image(path: Path, size: int | tuple[int, int], colour=(200, 40, 90), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (size, size) if isinstance(size, int) else size
    fill = colour if mode == "RGB" else colour[0]
    Image.new(mode, size, fill).save(path)
    return path


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


# ---------------------------------------------------------------- Hydra configs

# name: (num_classes, image_size, patch_size, train_transform, eval_transform, in_memory, base dataset, source class)
FACTS = {
    "cifar10": (10, 32, 4, "crop_flip", "none", True, "cifar10", CIFAR10Source),
    "cifar100": (100, 32, 4, "crop_flip", "none", True, "cifar100", CIFAR100Source),
    "svhn": (10, 32, 4, "crop_flip", "none", True, "svhn", SVHNSource),
    "tiny_imagenet": (200, 64, 8, "crop_flip", "none", True, "tiny_imagenet", TinyImageNetSource),
    "flower102": (102, 224, 32, "resized_crop_flip", "resize_center_crop", False, "flower102", Flowers102Source),
    "imagenet100": (100, 224, 32, "resized_crop_flip", "resize_center_crop", False, "imagenet100", ImageNet100Source),
    "imagenet_subset": (None, 224, 32, "resized_crop_flip", "resize_center_crop", False, "imagenet", ImageNetSubsetSource),
    "image_folder": (None, 224, 32, "resized_crop_flip", "resize_center_crop", False, "image_folder", ImageFolderSource),
}
VARIANTS = {
    "cifar10_224": (224, 32), "cifar100_224": (224, 32), "svhn_224": (224, 32), "tiny_imagenet_224": (224, 32),
    "cifar10_14": (14, 2), "cifar10_28": (28, 4), "cifar10_36": (36, 4), "cifar10_56": (56, 8), "cifar10_112": (112, 16),
    "flower102_56": (56, 8), "flower102_112": (112, 16),
    "imagenet100_28": (28, 4), "imagenet100_56": (56, 8), "imagenet100_112": (112, 16),
}
STATS = {
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "cifar100": ([0.5071, 0.4866, 0.4409], [0.2673, 0.2564, 0.2761]),
    "svhn": ([0.4378, 0.4439, 0.4729], [0.1981, 0.2011, 0.1970]),
    "tiny_imagenet": ([0.4802, 0.4481, 0.3975], [0.2770, 0.2691, 0.2821]),
    "imagenet100": ([0.4595, 0.4520, 0.3900], [0.2547, 0.2385, 0.2548]),
    "flower102": ([0.5115, 0.4160, 0.3410], [0.2951, 0.2488, 0.2882]),
    "imagenet_subset": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "image_folder": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    # resolution variants: the statistics of the resized images (flower102_112 is flower102's)
    "cifar10_14": ([0.4913, 0.4820, 0.4463], [0.2275, 0.2244, 0.2442]),
    "cifar10_28": ([0.4916, 0.4824, 0.4467], [0.2394, 0.2360, 0.2547]),
    "cifar10_36": ([0.4917, 0.4824, 0.4468], [0.2411, 0.2376, 0.2563]),
    "cifar10_56": ([0.4917, 0.4824, 0.4468], [0.2411, 0.2376, 0.2563]),
    "cifar10_112": ([0.4917, 0.4824, 0.4468], [0.2411, 0.2376, 0.2563]),
    "cifar10_224": ([0.4914, 0.4822, 0.4465], [0.2413, 0.2378, 0.2564]),
    "cifar100_224": ([0.5070, 0.4865, 0.4409], [0.2622, 0.2513, 0.2714]),
    "tiny_imagenet_224": ([0.4805, 0.4484, 0.3978], [0.2667, 0.2584, 0.2722]),
    "svhn_224": ([0.4377, 0.4438, 0.4728], [0.1960, 0.1989, 0.1955]),
    "flower102_56": ([0.5136, 0.4163, 0.3426], [0.2887, 0.2414, 0.2831]),
    "imagenet100_112": ([0.4583, 0.4505, 0.3889], [0.2512, 0.2347, 0.2510]),
    "imagenet100_56": ([0.4581, 0.4503, 0.3886], [0.2511, 0.2345, 0.2509]),
    "imagenet100_28": ([0.4582, 0.4504, 0.3887], [0.2512, 0.2345, 0.2508]),
}


def _compose_dataset(name: str, data_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+dataset={name}", "+paths=default", f"paths.data_dir={data_dir}"])
    return cfg.dataset


def _base(name: str) -> str:
    return name if name in FACTS else name.rsplit("_", 1)[0]


def test_every_dataset_config_is_checked_here():
    assert {p.stem for p in (CONF / "dataset").glob("*.yaml")} - {"digits"} == set(FACTS) | set(VARIANTS)


@pytest.mark.parametrize("name", sorted(set(FACTS) | set(VARIANTS)))
def test_dataset_config_composes_into_its_facts(tmp_path, name):
    d = _compose_dataset(name, tmp_path)
    base = _base(name)
    num_classes, size, patch, train_tf, eval_tf, in_memory, folder, source_class = FACTS[base]
    if name in VARIANTS:
        size, patch = VARIANTS[name]
        train_tf, eval_tf = "resized_crop_flip", "resize"

    assert d.name == name
    assert (d.num_classes, d.image_size, d.patch_size) == (num_classes, size, patch)
    assert d.image_size % d.patch_size == 0
    assert (d.train_transform, d.eval_transform) == (train_tf, eval_tf)
    assert d.hflip is True
    if train_tf == "crop_flip":
        assert d.crop_padding == 4
    assert (list(d.mean), list(d.std)) == STATS.get(name, STATS[base])
    assert d.download is False
    assert d.root == str(tmp_path / folder)
    assert d.source.root == d.root and d.source.download is False
    assert type(instantiate(d.source)) is source_class
    if base == "imagenet_subset":
        assert d.source.class_list == str(tmp_path / "imagenet" / "class_list.txt")
