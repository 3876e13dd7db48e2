"""Sweep summaries: one row per job, failed jobs included, rebuilt by `python -m relvit.summary`."""
import csv
import json
import subprocess
import sys

from relvit.evaluation.summary import JOB_RECORD, write_summary

from conftest import REPO, TINY, subprocess_env


def sweep(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "train.py"), "-m", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=subprocess_env(OMP_NUM_THREADS="1"))


def rows_of(sweep_dir):
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def fake_job(sweep_dir, name, overrides, record=None, acc=None):
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if record is not None:
        (job / JOB_RECORD).write_text(json.dumps({"overrides": overrides, **record}))
    if acc is not None:
        (job / "metrics.json").write_text(json.dumps({"monitor": "val/acc", "val": {"val/acc": acc}, "test": {"test/acc": acc - 0.1}}))


def test_rows_show_overrides_status_time_and_metrics(tmp_path):
    fake_job(tmp_path, "0", ["optimizer.lr=0.1", "seed=1"], {"status": "completed", "wall_s": 3.0, "error": ""}, acc=0.5)
    fake_job(tmp_path, "1", ["optimizer.lr=0.2", "seed=1"], {"status": "failed", "wall_s": 0.5, "error": "ConfigError: bad"})
    fake_job(tmp_path, "2", ["optimizer.lr=0.1", "seed=2"], acc=0.7)  # finished, its record not yet written
    fake_job(tmp_path, "10", ["optimizer.lr=0.2", "seed=2"])  # still running, or killed
    write_summary(tmp_path)
    rows = rows_of(tmp_path)
    assert [r["job"] for r in rows] == ["0", "1", "2", "10"]
    assert [r["status"] for r in rows] == ["completed", "failed", "completed", "unfinished"]
    assert rows[0]["optimizer.lr"] == "0.1" and rows[0]["seed"] == "1" and rows[0]["wall_s"] == "3.0"
    assert rows[0]["val/acc"] == "0.5000" and rows[0]["test/acc"] == "0.4000"
    assert rows[1]["error"] == "ConfigError: bad" and rows[1]["val/acc"] == ""
    md = (tmp_path / "summary.md").read_text()
    assert md.count("\n| ") == 5 and "| failed |" in md
    assert (tmp_path / "summary.png").stat().st_size > 0


def test_the_module_rebuilds_an_interrupted_sweep(tmp_path):
    fake_job(tmp_path, "0", ["seed=1"], acc=0.5)
    fake_job(tmp_path, "1", ["seed=2"])
    env = subprocess_env()
    done = subprocess.run([sys.executable, "-m", "relvit.summary", str(tmp_path)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "2 jobs" in done.stdout
    assert [r["status"] for r in rows_of(tmp_path)] == ["completed", "unfinished"]
    bad = subprocess.run([sys.executable, "-m", "relvit.summary", str(tmp_path / "nope")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_a_failed_job_is_a_row_and_the_sweep_goes_on(tmp_path):
    done = sweep("task=downstream", *TINY, "optimizer.lr=-1,1e-3", cwd=tmp_path)
    assert done.returncode != 0  # a job failed, and the exit status says so
    (sweep_dir,) = list((tmp_path / "multirun").iterdir())
    rows = rows_of(sweep_dir)
    assert [r["status"] for r in rows] == ["failed", "completed"]  # the job after the failure still ran
    assert "optimizer.lr=-1 is invalid" in rows[0]["error"]
    assert float(rows[1]["val/acc"]) >= 0 and float(rows[1]["wall_s"]) > 0
    # wall_s spans the job's own work: from the run dir's claim to its metrics.json, at least
    job = sweep_dir / "1"
    span = (job / "metrics.json").stat().st_mtime - (job / ".hydra" / "overrides.yaml").stat().st_mtime
    assert float(rows[1]["wall_s"]) >= span - 0.1
    assert "wall_s: seconds from Hydra's start of the job to its end" in (sweep_dir / "summary.md").read_text()
    assert (sweep_dir / "summary.md").is_file() and (sweep_dir / "summary.png").is_file()


def test_planted_links_in_a_sweep_dir_are_never_written_through(tmp_path):
    sweep_dir, outside = tmp_path / "sweep", tmp_path / "outside"
    sweep_dir.mkdir()
    outside.mkdir()
    fake_job(sweep_dir, "0", ["seed=1"], {"status": "completed", "wall_s": 1.0, "error": ""}, acc=0.5)
    victims = {name: outside / name for name in ("summary.md", "summary.md.tmp", "summary.csv.tmp", "summary.tmp.png")}
    for name, victim in victims.items():
        victim.write_text("keep me")
        (sweep_dir / name).symlink_to(victim)
    write_summary(sweep_dir)
    assert all(victim.read_text() == "keep me" for victim in victims.values())
    assert not (sweep_dir / "summary.md").is_symlink() and "| 0 |" in (sweep_dir / "summary.md").read_text()
    assert not [p for p in sweep_dir.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


def test_a_lock_planted_as_a_link_is_refused_and_its_target_kept(tmp_path):
    sweep_dir, victim = tmp_path / "sweep", tmp_path / "victim.txt"
    fake_job(sweep_dir, "0", ["seed=1"], {"status": "completed", "wall_s": 1.0, "error": ""}, acc=0.5)
    victim.write_text("keep me")
    (sweep_dir / ".summary.lock").symlink_to(victim)
    done = subprocess.run([sys.executable, "-m", "relvit.summary", str(sweep_dir)], capture_output=True, text=True,
                          timeout=300, env=subprocess_env())
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("error: cannot lock") and "symbolic link" in done.stderr and "Traceback" not in done.stderr
    assert victim.read_text() == "keep me" and not (sweep_dir / "summary.md").exists()
