"""Resuming rebuilds the run from its checkpoint; extend_to_epochs trains a finished run on."""
from __future__ import annotations

import json

from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from relvit.runs.checkpoints import read_checkpoint

from conftest import TINY

MIN_LR = 1.25e-6


def scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_resume_needs_only_the_checkpoint(cli, tmp_path):
    code, _, err = cli("train.py", *TINY, "task=downstream", f"hydra.run.dir={tmp_path / 'a'}")
    assert code == 0, err[-2000:]
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    # none of the original overrides repeated: backbone, sizes and budget come from the checkpoint
    code, _, err = cli("train.py", f"resume={last}", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'b'}")
    assert code == 0, err[-2000:]
    resumed = OmegaConf.load(tmp_path / "b" / "config.yaml")
    assert resumed.backbone.embed_dim == 36 and resumed.task.name == "downstream"
    assert read_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["epoch"] == 1


def test_resumed_first_phase_runs_its_second_phase_with_the_original_choices(cli, tmp_path):
    code, _, err = cli("train.py", *TINY, "task=upstream", 'finetune=["task=downstream"]', f"hydra.run.dir={tmp_path / 'a'}")
    assert code == 0, err[-2000:]
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    code, _, err = cli("train.py", f"resume={last}", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'b'}")
    assert code == 0, err[-2000:]
    second = OmegaConf.load(tmp_path / "b" / "finetune" / "config.yaml")
    assert second.backbone.embed_dim == 36 and second.task.name == "downstream"
    assert second.resume is None and second.pretrained == str(tmp_path / "b" / "checkpoints" / "best.ckpt")
    assert json.loads((tmp_path / "b" / "finetune" / "metrics.json").read_text())


def test_extend_to_epochs_goes_on_down_the_schedule_and_keeps_the_best_of_all_epochs(cli, tmp_path):
    args = [*TINY, "task=upstream", "trainer.max_epochs=2", "trainer.limit_train_batches=4"]
    code, _, err = cli("train.py", *args, f"hydra.run.dir={tmp_path / 'a'}")
    assert code == 0, err[-2000:]
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    code, _, err = cli("train.py", f"resume={last}", "extend_to_epochs=4", f"hydra.run.dir={tmp_path / 'b'}")
    assert code == 0, err[-2000:]
    lr_tag = next(t for t in EventAccumulator(str(tmp_path / "b" / "tensorboard")).Reload().Tags()["scalars"] if t.startswith("lr-"))
    new_rates = [v for step, v in scalars(tmp_path / "b", lr_tag) if step >= 8]
    assert new_rates and min(new_rates) > 10 * MIN_LR
    assert all(a >= b for a, b in zip(new_rates, new_rates[1:]))  # still decaying, no jump back to the floor
    # per epoch; each run's last entry is the evaluation of its best checkpoint after training
    losses = scalars(tmp_path / "a", "val/loss")[:-1] + scalars(tmp_path / "b", "val/loss")[:-1]
    assert len(losses) == 4
    best_epoch = min(range(4), key=lambda i: losses[i][1])
    summary = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert summary["best_checkpoint"] == str(tmp_path / "b" / "checkpoints" / "best.ckpt")
    assert read_checkpoint(summary["best_checkpoint"])["epoch"] == best_epoch


def test_extend_must_go_beyond_the_epochs_done(cli, tmp_path):
    code, _, err = cli("train.py", *TINY, "task=downstream", f"hydra.run.dir={tmp_path / 'a'}")
    assert code == 0
    code, _, err = cli("train.py", f"resume={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}", "extend_to_epochs=1")
    assert code == 2 and "error: extend_to_epochs=1 is invalid: " in err and "has trained 1 epochs" in err


def test_a_crafted_last_ckpt_cannot_direct_where_the_resumed_run_writes_or_what_it_copies(cli, tmp_path):
    import torch

    code, _, err = cli("train.py", *TINY, "task=downstream", f"hydra.run.dir={tmp_path / 'a'}")
    assert code == 0, err[-2000:]
    outside = tmp_path / "outside"
    outside.mkdir()
    honest = tmp_path / "a" / "checkpoints"
    planted = read_checkpoint(honest / "best.ckpt")
    planted["planted"] = True  # a real checkpoint, outside the interrupted run's directory
    torch.save(planted, outside / "best.ckpt")
    content = read_checkpoint(honest / "last.ckpt")
    saved = content["relvit_config"]
    saved["callbacks"]["model_checkpoint"]["dirpath"] = str(outside / "checkpoints")
    saved["logger"]["csv"] = {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(outside / "csv")}
    state = next(v for k, v in content["callbacks"].items() if k.startswith("RunCheckpoint"))
    state["best_model_path"] = str(outside / "best.ckpt")
    crafted = honest / "crafted.ckpt"
    torch.save(content, crafted)
    code, out, err = cli("train.py", f"resume={crafted}", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'b'}")
    assert code == 0, err[-2000:]
    assert sorted(p.name for p in outside.rglob("*")) == ["best.ckpt"]  # nothing written there
    assert f"is not in {honest}, the directory of the checkpoint being resumed" in out + err
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "b" / "csv" / "metrics.csv").is_file()
    assert "planted" not in read_checkpoint(tmp_path / "b" / "checkpoints" / "best.ckpt")


def test_a_stored_environment_lookup_is_refused_before_the_run_dir_is_claimed(cli, tmp_path, monkeypatch):
    import torch

    code, _, err = cli("train.py", *TINY, "task=downstream", f"hydra.run.dir={tmp_path / 'a'}")
    assert code == 0, err[-2000:]
    content = read_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")
    content["relvit_config"]["dataset"]["name"] = "${oc.env:RELVIT_PROBE_SECRET}"
    crafted = tmp_path / "crafted.ckpt"
    torch.save(content, crafted)
    monkeypatch.setenv("RELVIT_PROBE_SECRET", "do-not-leak")
    code, _, err = cli("train.py", f"resume={crafted}", f"hydra.run.dir={tmp_path / 'b'}")
    assert code == 2 and "node dataset.name = '${oc.env:RELVIT_PROBE_SECRET}' calls the resolver 'oc.env'" in err
    assert "do-not-leak" not in err and not (tmp_path / "b" / "run.json").exists()


def test_resuming_a_finished_run_says_nothing_was_left_to_train(cli, tmp_path):
    code, _, err = cli("train.py", *TINY, "task=downstream", f"hydra.run.dir={tmp_path / 'a'}")
    assert code == 0, err[-2000:]
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    code, out, err = cli("train.py", f"resume={last}", f"hydra.run.dir={tmp_path / 'b'}")
    assert code == 0, err[-2000:]
    assert (f"resume={last}: nothing was left to train, the run had finished its trainer.max_epochs=1 epochs "
            "(extend_to_epochs=<more epochs> trains it on)") in out
    summary = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert summary["best_checkpoint"] == str(tmp_path / "b" / "checkpoints" / "best.ckpt") and summary["test"]
