"""A resumed checkpoint's callback state names its best checkpoint; only one beside it is used."""
from __future__ import annotations

import pytest
import torch

from relvit.runs.checkpoint_io import own_best


@pytest.fixture
def run(tmp_path):
    """An interrupted run's checkpoints/ (last.ckpt, best.ckpt, a stray file) and a file outside it."""
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("last.ckpt", "best.ckpt"):
        torch.save({"state_dict": {"w": torch.zeros(2)}}, folder / name)
    (folder / "notes.ckpt").write_text("not a checkpoint")
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "elsewhere.ckpt")
    (folder / "link.ckpt").symlink_to(tmp_path / "elsewhere.ckpt")
    return folder


def test_the_best_checkpoint_beside_the_resumed_one_is_used(run):
    assert own_best(str(run / "best.ckpt"), run / "last.ckpt") == (run / "best.ckpt").resolve()


@pytest.mark.parametrize("name, why", [
    ("../../elsewhere.ckpt", "is not in"),
    ("link.ckpt", "is not in"),  # judged by where the link leads
    ("last.ckpt", "is not a best checkpoint"),
    ("missing.ckpt", "is not a best checkpoint"),
    ("notes.ckpt", "is corrupt or not a checkpoint"),
])
def test_any_other_path_is_not_used_and_the_log_says_why(run, name, why, caplog):
    assert own_best(str(run / name), run / "last.ckpt") is None
    assert why in caplog.text and "the best is chosen among the new epochs" in caplog.text
