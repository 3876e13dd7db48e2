"""experiment=relvit_vs_scratch: the sweep runs end to end and fills every cell of its table."""
import csv

import pytest

from relvit.errors import MissingFileError
from relvit.evaluation.comparison import own_best, table_rows

from conftest import TINY


@pytest.mark.slow  # seven tiny runs and four frozen evaluations: about 2 minutes on 2 CPU cores
def test_relvit_vs_scratch_runs_end_to_end_and_fills_its_table(cli, tmp_path):
    tiny = [o for o in TINY if not o.startswith(("backbone=", "trainer.max_epochs"))]
    code, out, err = cli("train.py", "experiment=relvit_vs_scratch", *tiny, "trainer.max_epochs=1", "seed=1",
                         f"paths.log_dir={tmp_path / 'outputs'}")
    assert code == 0, err[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    with open(sweep / "relvit_vs_scratch.csv") as f:
        rows = list(csv.reader(f))
    names = [r[0] for r in rows[1:]]
    for budget in ("100pct", "10pct", "1pct"):
        assert f"fine-tuning test/acc, labels {budget}" in names
    assert {"frozen test/knn_acc_mean", "frozen test/linear_acc_cls", "pre-training val/rel_acc"} <= set(names)
    assert all(cell.strip() for row in rows for cell in row)  # every cell filled ("-" where a column has no meaning)
    assert all(" ± " in row[1] for row in rows[1:] if "lr chosen" not in row[0])
    assert [r[1] for r in rows if r[0] == "fine-tuning lr chosen on val, labels 1pct"] == ["0.001"]
    assert (sweep / "relvit_vs_scratch.md").read_text().count("\n|") == len(rows) + 1  # and the separator line
    assert (sweep / "0" / "100pct" / "relvit" / "lr0.001" / "checkpoints" / "best.ckpt").is_file()
    assert (sweep / "0" / "1pct" / "scratch" / "lr0.001" / "metrics.json").is_file()


def test_the_table_gives_mean_and_std_over_seeds():
    def job(seed, relvit, scratch, complete=True):
        return {"seed": seed, "wall_s": 1.0, "pretrain": {"val/rel_acc": 0.5}, "pretrained_arm": "relvit", "complete": complete,
                "frozen": {"pretrained": {"test/knn_acc_mean": relvit}, "random": {"test/knn_acc_mean": scratch}},
                "finetune": {"100pct": {"relvit": {"test/acc": relvit, "val/acc": 0.5, "lr": 1e-3},
                                        "scratch": {"test/acc": scratch, "val/acc": 0.5, "lr": 2e-3}}}}

    rows = table_rows([job(1, 0.8, 0.6), job(2, 0.6, 0.6)])
    assert rows[0] == ["measure", "relvit (pre-trained encoder), n=2", "scratch (its random init), n=2", "relvit − scratch"]
    assert rows[1] == ["fine-tuning test/acc, labels 100pct", "0.7000 ± 0.1414", "0.6000 ± 0.0000", "0.1000 ± 0.1414"]
    assert rows[3] == ["fine-tuning lr chosen on val, labels 100pct", "0.001, 0.001", "0.002, 0.002", "-"]
    assert rows[4][0] == "frozen test/knn_acc_mean" and rows[5] == ["pre-training val/rel_acc", "0.5000 ± 0.0000", "-", "-"]
    unfinished = job(3, 0.7, 0.6, complete=False)
    del unfinished["finetune"]["100pct"], unfinished["wall_s"]
    rows = table_rows([job(1, 0.8, 0.6), unfinished])
    assert not any(r[0].startswith("fine-tuning") for r in rows)  # a budget counts once every seed has finished it
    assert rows[1] == ["frozen test/knn_acc_mean", "0.7500 ± 0.0707", "0.6000 ± 0.0000", "0.1500 ± 0.0707"]


def test_the_arms_and_rates_are_checked_before_any_work(cli):
    code, out, err = cli("train.py", "experiment=relvit_vs_scratch", "comparison.lrs=[]", "hydra.sweeper.params.seed=1")
    assert code != 0 and "comparison.lrs=[] is invalid: a list of one or more positive learning rates" in err


def test_a_resumed_job_starts_its_arms_from_its_own_pretraining_checkpoint(tmp_path):
    # a sweep dir copied for a control run, or moved, still records the original's absolute path
    original, copy = tmp_path / "original" / "pretrain", tmp_path / "copy" / "pretrain"
    for phase in (original, copy):
        (phase / "checkpoints").mkdir(parents=True)
        (phase / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    recorded = str(original / "checkpoints" / "best.ckpt")
    assert own_best(copy, recorded) == str(copy / "checkpoints" / "best.ckpt")
    (copy / "checkpoints" / "best.ckpt").unlink()
    with pytest.raises(MissingFileError, match="holds no such checkpoint"):
        own_best(copy, recorded)  # never the recorded file outside the job's dir
    (copy / "checkpoints" / "best.ckpt").symlink_to(original / "checkpoints" / "best.ckpt")
    with pytest.raises(MissingFileError):
        own_best(copy, recorded)  # nor through a link planted in it
    (copy / "checkpoints" / "passwd").write_text("x")
    for bad in ("/etc/passwd", None, 3):
        with pytest.raises(MissingFileError):
            own_best(copy, bad)
