"""Few labels: data.labels_per_class / data.label_fraction restrict supervised runs only."""
import pytest
import torch

from relvit.config.checks import check_config
from relvit.data.splits import LabelBudget
from relvit.errors import ConfigError
from relvit.training.run import build


def class_counts(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels).tolist()


def test_labels_per_class_keeps_exactly_k_of_each_class_the_same_for_the_same_seed(tiny_cfg):
    run = build(tiny_cfg("task=downstream", "data.labels_per_class=5", "seed=3"))
    train = run.datamodule.splits["train"]
    assert class_counts(train.labels) == [5] * 10
    again = build(tiny_cfg("task=downstream", "data.labels_per_class=5", "seed=3")).datamodule.splits["train"]
    assert torch.equal(train.images, again.images)
    other = build(tiny_cfg("task=downstream", "data.labels_per_class=5", "seed=4")).datamodule.splits["train"]
    assert not torch.equal(train.images, other.images)
    assert run.datamodule.batch_size == 50  # the 64 of the config no longer fit: one batch holds the set
    assert run.cfg.data.labels_per_class == 5 and run.cfg.data.label_seed == 3  # recorded in the config


def test_pre_training_ignores_the_label_budget(tiny_cfg):
    full = build(tiny_cfg("task=upstream")).datamodule.splits["train"]
    limited = build(tiny_cfg("task=upstream", "data.labels_per_class=5")).datamodule.splits["train"]
    assert len(limited) == len(full) > 50


def test_label_fraction_is_stratified_with_at_least_one_per_class():
    labels = torch.arange(1000) % 10
    assert class_counts(labels[LabelBudget(fraction=0.1).select(labels)]) == [10] * 10
    assert class_counts(labels[LabelBudget(fraction=0.001).select(labels)]) == [1] * 10


@pytest.mark.parametrize("overrides,message", [
    (["data.labels_per_class=0"], "data.labels_per_class=0 is invalid"),
    (["data.label_fraction=1.5"], "data.label_fraction=1.5 is invalid"),
    (["data.labels_per_class=2", "data.label_fraction=0.5"], "not both"),
    (["data.labels_per_class=100000"], "class 0 has only"),
])
def test_a_bad_budget_is_refused_naming_the_key(tiny_cfg, overrides, message):
    cfg = tiny_cfg("task=downstream", *overrides)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)  # as a run does: the config first, then the data
        build(cfg)
