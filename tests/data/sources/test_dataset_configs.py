"""Every dataset config composes with Hydra into the facts of its dataset."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from relvit.data.sources.cifar import CIFAR10Source, CIFAR100Source
from relvit.data.sources.flowers import Flowers102Source
from relvit.data.sources.image_folder import ImageFolderSource
from relvit.data.sources.imagenet100 import ImageNet100Source
from relvit.data.sources.imagenet_subset import ImageNetSubsetSource
from relvit.data.sources.svhn import SVHNSource
from relvit.data.sources.tiny_imagenet import TinyImageNetSource

CONF = Path(__file__).resolve().parents[3] / "conf"


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
