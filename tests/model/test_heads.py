import math

import pytest
import torch
import torch.nn.functional as F

from relvit.model.heads import ClassifierHead, PairScoreHead


def test_relation_head_shape_and_width():
    head = PairScoreHead(embed_dim=36, num_outputs=9)
    assert head.head_dim == 4
    assert head.query.bias is None and head.key.bias is None
    assert head(torch.randn(2, 5, 36)).shape == (2, 9, 5, 5)


def test_pair_scores_match_a_worked_example():
    # D = 2, one output: q = identity, k = 2 * identity -> score(a, b) = 2 z_a . z_b / sqrt(2)
    head = PairScoreHead(embed_dim=2, num_outputs=1)
    with torch.no_grad():
        head.query.weight.copy_(torch.eye(2))
        head.key.weight.copy_(2 * torch.eye(2))
    z = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]]])
    expected = 2 * (z[0] @ z[0].T) / math.sqrt(2)
    assert torch.allclose(head(z)[0, 0], expected)


def test_each_class_uses_its_own_maps():
    head = PairScoreHead(embed_dim=18, num_outputs=9)  # 2 dims per class
    with torch.no_grad():
        head.query.weight.zero_()
        head.key.weight.zero_()
        head.query.weight[4:6, :2] = torch.eye(2)  # class 2 only
        head.key.weight[4:6, :2] = torch.eye(2)
    z = torch.randn(1, 3, 18)
    scores = head(z)
    assert torch.count_nonzero(scores[0, [0, 1, 3, 4, 5, 6, 7, 8]]) == 0
    assert torch.allclose(scores[0, 2], z[0, :, :2] @ z[0, :, :2].T / math.sqrt(2))


def test_relation_loss_of_a_known_answer():
    # logits that put all mass on the right class give ~0 loss; uniform logits give log 9
    target = torch.tensor([[[4, 3], [5, 4]]])
    sharp = F.one_hot(target, 9).permute(0, 3, 1, 2).float() * 100
    assert F.cross_entropy(sharp, target).item() < 1e-6
    assert F.cross_entropy(torch.zeros(1, 9, 2, 2), target).item() == pytest.approx(math.log(9))


@pytest.mark.parametrize("pool,expected_in", [("cls", 8), ("mean", 8), ("flatten", 8 * 4)])
def test_classifier_pools(pool, expected_in):
    head = ClassifierHead(embed_dim=8, num_patches=4, num_classes=3, pool=pool)
    assert head.fc.in_features == expected_in
    cls, patches = torch.randn(2, 8), torch.randn(2, 4, 8)
    assert head(cls, patches).shape == (2, 3)


def test_classifier_mean_pool_equals_linear_on_mean():
    head = ClassifierHead(embed_dim=8, num_patches=4, num_classes=3, pool="mean")
    patches = torch.randn(2, 4, 8)
    assert torch.allclose(head(None, patches), head.fc(patches.mean(1)))


def test_bad_pool_is_refused():
    with pytest.raises(ValueError, match="cls"):
        ClassifierHead(8, 4, 3, pool="max")
