import pytest
import torch

from relvit.data.sources.digits import DigitsSource
from relvit.data.splits import stratified_split


def test_split_is_disjoint_complete_stratified_and_fixed():
    labels = torch.arange(10).repeat_interleave(torch.tensor([50, 60, 70, 80, 90, 100, 110, 120, 130, 140]))
    keep, held = stratified_split(labels, 0.1, seed=0)
    assert len(set(keep.tolist()) & set(held.tolist())) == 0
    assert sorted(keep.tolist() + held.tolist()) == list(range(labels.numel()))
    per_class = torch.bincount(labels[held], minlength=10)
    assert per_class.tolist() == [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]  # 10% of every class
    again, _ = stratified_split(labels, 0.1, seed=0)
    other, _ = stratified_split(labels, 0.1, seed=1)
    assert torch.equal(keep, again) and not torch.equal(keep, other)


def test_small_classes_keep_a_sample_on_each_side():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    keep, held = stratified_split(labels, 0.1, seed=0)
    assert set(labels[held].tolist()) == {0, 1}  # one of each class that has two or more
    assert set(labels[keep].tolist()) == {0, 1, 2}


def test_digits_train_val_test_sizes(tiny_cfg):
    from relvit.training.run import build

    run = build(tiny_cfg())
    splits = run.datamodule.splits
    sizes = {k: len(v) for k, v in splits.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 359 and 140 <= sizes["val"] <= 146
    for name, split in splits.items():
        counts = torch.bincount(split.labels, minlength=10).float()
        assert counts.min() / counts.max() > 0.85, name  # every class in proportion
    source = DigitsSource()
    train, test = source.load("train"), source.load("test")
    flat = lambda s: {tuple(x.flatten().tolist()) for x in s.images[:, 0]}  # noqa: E731
    assert not flat(train) & flat(test)  # no image in both


@pytest.mark.parametrize("overrides", [["data.select_on=test"], ["data.select_on=test", "data.val_fraction=0"], ["recipe=original"]])
def test_selection_on_test_trains_on_every_training_image(tiny_cfg, overrides):
    from relvit.training.run import build

    run = build(tiny_cfg(*overrides))
    splits = run.datamodule.splits
    assert len(splits["train"]) == len(DigitsSource().load("train")) == 1797 - 359
    assert splits["val"] is splits["test"]


def test_zero_val_fraction_needs_selection_on_test(tiny_cfg):
    from relvit.config.checks import ConfigError, check_config

    with pytest.raises(ConfigError, match=r"data.val_fraction=0 is invalid: .*needs data.select_on=test"):
        check_config(tiny_cfg("data.val_fraction=0"))


@pytest.mark.parametrize("recipe,batches", [("corrected", 1438 // 64), ("original", -(-1438 // 64))])
def test_last_incomplete_batch_is_kept_only_by_the_original_recipe(tiny_cfg, recipe, batches):
    from relvit.training.run import build

    run = build(tiny_cfg(f"recipe={recipe}", "data.select_on=test"))
    loader = run.datamodule.train_dataloader()
    assert len(loader) == batches and sum(len(y) for _, y in loader) == 1438 // 64 * 64 + (recipe == "original") * (1438 % 64)


def _cifar_folders(root, per_class, splits=("train",)):
    from conftest import write_image

    for split in splits:
        for label in range(10):
            for index in range(per_class):
                write_image(root / split / f"c{label}" / f"{index:04d}.jpg", 32, colour=(25 * label, 5 * index, 90))
    return root


def test_a_test_split_is_held_out_of_training_folders_that_have_none(tiny_cfg, tmp_path):
    from relvit.training.run import build

    root = _cifar_folders(tmp_path / "cifar10", per_class=20)
    splits = build(tiny_cfg("dataset=cifar10", f"dataset.root={root}", "data.test_fraction=0.1",
                            "data.val_fraction=0.1")).datamodule.splits
    assert {k: len(v) for k, v in splits.items()} == {"train": 160, "val": 20, "test": 20}
    assert torch.bincount(splits["test"].labels).tolist() == [2] * 10  # stratified
    images = {name: {tuple(x.flatten().tolist()) for x in split.images} for name, split in splits.items()}
    assert not images["test"] & (images["train"] | images["val"])  # one colour an image: no image in two splits
    again = build(tiny_cfg("dataset=cifar10", f"dataset.root={root}", "data.test_fraction=0.1",
                           "data.val_fraction=0.1", "seed=7")).datamodule.splits
    assert torch.equal(again["test"].images, splits["test"].images)  # fixed, whatever the run's seed


def test_an_official_test_split_is_kept_and_test_fraction_ignored(tiny_cfg, tmp_path):
    from relvit.training.run import build

    root = _cifar_folders(tmp_path / "cifar10", per_class=4, splits=("train", "test"))
    splits = build(tiny_cfg("dataset=cifar10", f"dataset.root={root}", "data.test_fraction=0.1",
                            "data.batch_size=8")).datamodule.splits
    assert len(splits["test"]) == 40 and len(splits["train"]) + len(splits["val"]) == 40


def test_test_fraction_is_checked(tiny_cfg):
    from relvit.config.checks import ConfigError, check_config

    with pytest.raises(ConfigError, match=r"data.test_fraction=1.0 is invalid: "):
        check_config(tiny_cfg("data.test_fraction=1.0"))
