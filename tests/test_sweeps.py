"""Launchers and searches of the cluster extra: joblib, submitit (local and SLURM), Optuna."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY, subprocess_env

pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="needs pip install -e '.[cluster]'")


def train(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=subprocess_env(OMP_NUM_THREADS="1"))


def summary_rows(sweep_dir):
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_the_slurm_launchers_compose(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs pip install -e '.[cluster]'")
    common = ["hydra.launcher.partition=gpu", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4",
              "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4", "--cfg", "hydra"]
    plain = train("hydra/launcher=submitit_slurm", *common, cwd=tmp_path)  # the plugin's own config
    assert plain.returncode == 0, plain.stderr[-3000:]
    done = train("hydra/launcher=slurm", *common, cwd=tmp_path)  # with this project's defaults
    assert done.returncode == 0, done.stderr[-3000:]
    assert "deprecated" not in done.stderr
    for out in (plain.stdout, done.stdout):
        assert "SlurmLauncher" in out and "partition: gpu" in out and "nodes: 2" in out and "gpus_per_node: 4" in out
    assert "tasks_per_node: ${.gpus_per_node}" in done.stdout  # one task per GPU
    assert "max_num_timeout: 5" in done.stdout  # requeued after a time-out, as after a preemption


def test_an_optuna_study_continues_when_run_again(tmp_path):
    optuna = pytest.importorskip("optuna", reason="needs pip install -e '.[cluster]'")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs pip install -e '.[cluster]'")
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


def compose_with_hydra(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import CONF

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_the_paper_grid_compares_pretraining_with_scratch_at_one_budget(monkeypatch, tmp_path):
    import torch

    # the grid is for GPUs: its configs are checked as on a machine with a bfloat16 GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    from omegaconf import open_dict

    from relvit.config.checks import check_config

    grid = compose_with_hydra(["sweep=paper_grid"])
    params = grid.hydra.sweeper.params
    assert grid.hydra.mode.name == "MULTIRUN" and "SlurmLauncher" in grid.hydra.launcher._target_
    arms = params["sweep/arm@_global_"].split(",")
    epochs = {}
    for dataset in params.dataset.split(","):
        for backbone in params.backbone.split(","):
            for arm in arms:
                cfg = compose_with_hydra(["sweep=paper_grid", f"dataset={dataset}", f"backbone={backbone}", f"sweep/arm@_global_={arm}"])
                with open_dict(cfg):
                    del cfg["hydra"]
                    cfg.paths.root_dir, cfg.paths.output_dir = str(tmp_path), str(tmp_path / "run")
                Path(cfg.dataset.root).mkdir(parents=True, exist_ok=True)  # the cluster's data dir
                check_config(cfg)  # every job of the grid is a valid run
                phases = [cfg.trainer.max_epochs] + [int(o.split("=")[1]) for o in cfg.finetune or [] if o.startswith("trainer.max_epochs=")]
                epochs[arm] = (cfg.task.name, sum(phases))
    assert epochs == {"relvit_then_finetune": ("upstream", 200), "scratch": ("downstream", 200)}


def test_the_digits_sweep_runs_as_a_sweep():
    cfg = compose_with_hydra(["sweep=digits_seeds_lr"])
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.dataset.name == "digits" and cfg.task.name == "downstream"
    assert set(cfg.hydra.sweeper.params) == {"optimizer.lr", "seed"}
