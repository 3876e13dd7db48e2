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
    from relvit.training import build

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
    from relvit.training import build

    run = build(tiny_cfg(*overrides))
    splits = run.datamodule.splits
    assert len(splits["train"]) == len(DigitsSource().load("train")) == 1797 - 359
    assert splits["val"] is splits["test"]


def test_zero_val_fraction_needs_selection_on_test(tiny_cfg):
    from relvit.config_checks import ConfigError, check_config

    with pytest.raises(ConfigError, match=r"data.val_fraction=0 is invalid: .*needs data.select_on=test"):
        check_config(tiny_cfg("data.val_fraction=0"))


@pytest.mark.parametrize("recipe,batches", [("corrected", 1438 // 64), ("original", -(-1438 // 64))])
def test_last_incomplete_batch_is_kept_only_by_the_original_recipe(tiny_cfg, recipe, batches):
    from relvit.training import build

    run = build(tiny_cfg(f"recipe={recipe}", "data.select_on=test"))
    loader = run.datamodule.train_dataloader()
    assert len(loader) == batches and sum(len(y) for _, y in loader) == 1438 // 64 * 64 + (recipe == "original") * (1438 % 64)
