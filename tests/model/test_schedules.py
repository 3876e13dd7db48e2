import math

import pytest
import torch

from relvit.model.schedules import WarmupCosine, warmup_cosine


def test_quarter_cosine_follows_the_original_formula():
    s = WarmupCosine(total_steps=1000, base_lr=5e-4, decay="quarter_cosine")
    assert s.lr(0) == 0.0
    assert s.lr(50) == pytest.approx(5e-4 * 0.5)  # half-way through the 100 warm-up steps
    for step in (100, 400, 999, 1000):
        expected = 5e-4 - (5e-4 - 1.25e-6) * (1 - math.cos(math.pi / 2 * step / 1000))
        assert s.lr(step) == pytest.approx(expected)
    assert s.lr(1000) == pytest.approx(1.25e-6)
    # a quarter cosine is still above the half cosine at 3/4 of the way
    assert s.lr(750) > WarmupCosine(1000, 5e-4, "half_cosine").lr(750)


def test_half_cosine():
    s = WarmupCosine(total_steps=1000, base_lr=1e-3, decay="half_cosine", warmup_fraction=0.1, min_lr=0.0)
    assert s.lr(100) == pytest.approx(1e-3)
    assert s.lr(550) == pytest.approx(5e-4)
    assert s.lr(1000) == pytest.approx(0.0, abs=1e-12)


def test_lambda_lr_drives_the_optimizer_per_step():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    sched = warmup_cosine(opt, total_steps=10, decay="quarter_cosine")
    assert opt.param_groups[0]["lr"] == 0.0
    opt.step()
    sched.step()
    # warm-up is one step of ten; step 1 is already on the quarter cosine
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4 - (5e-4 - 1.25e-6) * (1 - math.cos(math.pi / 20)))


def test_unknown_decay():
    with pytest.raises(ValueError, match="half_cosine"):
        WarmupCosine(10, 1e-3, decay="linear")
