"""Launchers and searches of the cluster extra: joblib, submitit (local and SLURM), Optuna."""
import csv
import subprocess
import sys

import pytest

from conftest import REPO, TINY, subprocess_env

pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="needs pip install -e '.[cluster]'")


def train(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=subprocess_env(OMP_NUM_THREADS="1"))


def summary_rows(sweep_dir):
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_a_launcher_runs_two_jobs_into_one_summary(launcher, tmp_path):
    done = train("-m", f"hydra/launcher={launcher}", "task=downstream", *TINY, "seed=1,2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep_dir,) = list((tmp_path / "multirun").iterdir())
    rows = summary_rows(sweep_dir)
    assert [(r["seed"], r["status"]) for r in rows] == [("1", "completed"), ("2", "completed")]
    assert all(float(r["val/acc"]) >= 0 and r["test/acc"] for r in rows)


def test_the_slurm_launcher_composes(tmp_path):
    done = train("hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.nodes=2",
                 "hydra.launcher.gpus_per_node=4", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4",
                 "--cfg", "hydra", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "SlurmLauncher" in out and "partition: gpu" in out
    assert "nodes: 2" in out and "gpus_per_node: 4" in out and "tasks_per_node: ${.gpus_per_node}" in out  # one task per GPU
    assert "max_num_timeout: 5" in out  # requeued after a time-out, as after a preemption


def test_an_optuna_study_continues_when_run_again(tmp_path):
    optuna = pytest.importorskip("optuna")
    study_dir = tmp_path / "study"
    tiny = [o for o in TINY if not o.startswith("backbone=")]
    for _ in range(2):
        done = train("-m", "hparams_search=digits_finetune", *tiny, "hydra.sweeper.n_trials=2",
                     f"hydra.sweep.dir={study_dir}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="digits_finetune", storage=f"sqlite:///{study_dir}/optuna.db")
    assert len(study.trials) == 4 and all(t.value is not None for t in study.trials)
    assert len({t.params["optimizer.lr"] for t in study.trials}) == 4  # the second run drew new points
    assert len(summary_rows(study_dir)) == 4
