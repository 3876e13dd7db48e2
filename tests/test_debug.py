"""debug=fast: one batch of each split through everything, the metrics printed, nothing written."""
from conftest import TINY


def test_debug_fast_prints_test_metrics_and_writes_no_run(cli, tmp_path):
    code, out, err = cli("train.py", *TINY, "debug=fast", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 0, err[-2000:]
    assert "debug run (one batch of each split, nothing saved)" in out
    header = next(line for line in out.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "val", "test"]
    written = sorted(p.name for p in (tmp_path / "run").rglob("*") if p.is_file()) if (tmp_path / "run").exists() else []
    assert written in ([], ["train.log"])
