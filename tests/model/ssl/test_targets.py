import math

import pytest
import torch

from relvit.model.ssl import RELATION_CLASSES, angle_targets, distance_targets, position_targets, relation_targets

C = {name: i for i, name in enumerate(RELATION_CLASSES)}


def test_class_order_is_the_original():
    assert RELATION_CLASSES == ("LU", "CU", "RU", "LC", "CC", "RC", "LD", "CD", "RD")


def test_one_by_one_grid():
    assert relation_targets(1).tolist() == [[C["CC"]]]
    assert position_targets(1).tolist() == [0]
    assert distance_targets(1).tolist() == [[-1.0]]
    assert angle_targets(1).tolist() == [[-1.0]]


def test_two_by_two_by_hand():
    # tokens: 0 1 / 2 3
    expected = [
        ["CC", "LC", "CU", "LU"],
        ["RC", "CC", "RU", "CU"],
        ["CD", "LD", "CC", "LC"],
        ["RD", "CD", "RC", "CC"],
    ]
    assert relation_targets(2).tolist() == [[C[n] for n in row] for row in expected]


def test_three_by_three_examples_from_the_method():
    rel = relation_targets(3)
    assert RELATION_CLASSES[rel[0, 1]] == "LC"  # token 0 is left of token 1
    assert RELATION_CLASSES[rel[4, 0]] == "RD"  # the centre is right of and below the corner
    assert RELATION_CLASSES[rel[2, 6]] == "RU"
    assert RELATION_CLASSES[rel[7, 4]] == "CD"
    assert RELATION_CLASSES[rel[3, 5]] == "LC"


def test_four_by_four_labels_every_pair_at_any_distance():
    rel = relation_targets(4)
    assert rel.shape == (16, 16) and rel.dtype == torch.long
    assert RELATION_CLASSES[rel[0, 15]] == "LU"  # far corners still get a relation
    assert RELATION_CLASSES[rel[15, 0]] == "RD"
    assert RELATION_CLASSES[rel[12, 3]] == "LD"
    assert RELATION_CLASSES[rel[1, 13]] == "CU"
    assert torch.equal(torch.diagonal(rel), torch.full((16,), C["CC"]))
    assert set(rel.unique().tolist()) == set(range(9))


@pytest.mark.parametrize("side", [1, 2, 3, 4, 7])
def test_mirror_symmetry(side):
    rel = relation_targets(side)
    assert torch.equal(rel.T, 8 - rel)  # rel[b, a] is the mirror class of rel[a, b]


def test_positions_are_raster_indices():
    assert position_targets(4).tolist() == list(range(16))


def test_distances_by_hand():
    d = distance_targets(3)
    # largest distance is the diagonal 2*sqrt(2) -> +1; neighbours at 1 -> 2/(2*sqrt 2) - 1
    assert d[0, 8] == pytest.approx(1.0)
    assert d[0, 1] == pytest.approx(2 / (2 * math.sqrt(2)) - 1)
    assert torch.allclose(torch.diagonal(d), torch.full((9,), -1.0))
    assert torch.equal(d, d.T)


def test_angles_by_hand():
    a = angle_targets(2)
    # shifted by +G/2 = 1: token 0 at (1, 1), token 1 at (2, 1), token 2 at (1, 2), token 3 at (2, 2);
    # the widest angle is between tokens 1 and 2 -> +1; tokens 0 and 3 are collinear, and only the
    # 1e-4 in the denominator keeps their angle above 0
    assert a[1, 2] == pytest.approx(1.0)
    assert -1.0 < a[0, 3] < -0.95
    assert torch.allclose(torch.diagonal(a), torch.full((4,), -1.0))
    assert torch.equal(a, a.T)


def notes_angle(side, a, b):
    """The method notes' angle formula for one pair, before the division by the maximum."""
    if a == b:
        return 0.0
    (ra, ca), (rb, cb) = divmod(a, side), divmod(b, side)
    pa, pb = (ca + side / 2, ra + side / 2), (cb + side / 2, rb + side / 2)
    dot = pa[0] * pb[0] + pa[1] * pb[1]
    return math.acos(dot / (math.hypot(*pa) * math.hypot(*pb) + 1e-4)) / math.pi


@pytest.mark.parametrize("side", range(2, 17))
def test_angle_and_distance_targets_follow_the_notes_formulas(side):
    n = side * side
    raw = [[notes_angle(side, a, b) for b in range(n)] for a in range(n)]
    top = max(max(row) for row in raw)
    expected_angle = torch.tensor([[m / top * 2 - 1 for m in row] for row in raw])
    dist = [[math.dist(divmod(a, side), divmod(b, side)) for b in range(n)] for a in range(n)]
    far = max(max(row) for row in dist)
    expected_dist = torch.tensor([[2 * d / far - 1 for d in row] for row in dist])
    assert torch.allclose(angle_targets(side), expected_angle.float(), atol=1e-5)
    assert torch.allclose(distance_targets(side), expected_dist.float(), atol=1e-5)


def test_bad_side_is_refused():
    with pytest.raises(ValueError, match="positive integer"):
        relation_targets(0)
