"""kNN and linear evaluation on features whose answer is known: separable, and labels shuffled."""
import pytest
import torch

from relvit.probes.features import feature_kinds
from relvit.probes.knn import knn_accuracy
from relvit.probes.linear import linear_eval

CLASSES = 10


def separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [n, 32]: a class's own direction, plus a little noise; labels [n]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    centres = torch.eye(32)[:CLASSES] * 5
    return centres[labels] + 0.3 * torch.randn(n, 32, generator=g), labels


def shuffled(labels: torch.Tensor, seed: int) -> torch.Tensor:
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]


def test_knn_is_perfect_on_separable_features_and_at_chance_on_shuffled_labels():
    (x, y), (q, qy) = separable(1000, 0), separable(2000, 1)
    assert knn_accuracy(x, y, q, qy, CLASSES)["acc"] == 1.0
    # chance is 0.1; with 2000 queries one standard deviation is ~0.007: 0.05 is seven of them
    assert abs(knn_accuracy(x, shuffled(y, 2), q, qy, CLASSES)["acc"] - 0.1) < 0.05


def test_knn_reports_top5_only_beyond_ten_classes():
    x, y = torch.randn(200, 8), torch.arange(200) % 20
    out = knn_accuracy(x, y, x, y, 20, k=1)
    assert out["acc"] == 1.0 and out["acc_top5"] == 1.0  # each point is its own nearest neighbour
    assert "acc_top5" not in knn_accuracy(x, y % 10, x, y % 10, 10)


def test_linear_is_perfect_on_separable_features_and_at_chance_on_shuffled_labels():
    train, val, test = separable(1000, 0), separable(500, 1), separable(2000, 2)
    grid = dict(lrs=[1e-2, 1e-1], weight_decays=[0.0], steps=100)
    result = linear_eval(train, val, test, CLASSES, **grid)
    assert result.val_acc == 1.0 and result.test_acc == 1.0
    noise = [(x, shuffled(y, s)) for s, (x, y) in enumerate((train, val, test))]
    result = linear_eval(*noise, CLASSES, **grid)
    assert abs(result.test_acc - 0.1) < 0.05  # chance 0.1, one standard deviation ~0.007


def test_feature_choice_is_checked():
    assert feature_kinds("both", True) == ["cls", "mean"] and feature_kinds("both", False) == ["mean"]
    with pytest.raises(ValueError, match="features must be one of"):
        feature_kinds("max", True)
    with pytest.raises(ValueError, match="no CLS token"):
        feature_kinds("cls", False)


def test_classification_reports_top5_beyond_ten_classes(tiny_cfg):
    from relvit.training.run import build

    run = build(tiny_cfg("task=downstream"))
    images, labels = next(iter(run.datamodule.val_dataloader()))
    x = run.datamodule.transform_batch(images, train=False)
    assert "acc_top5" not in run.module.compute_losses(x, labels)  # digits: 10 classes
    module = run.module
    module.classifier.fc = torch.nn.Linear(module.classifier.fc.in_features, 12)
    out = module.compute_losses(x, labels)
    assert 0.0 <= out["acc"] <= out["acc_top5"] <= 1.0
