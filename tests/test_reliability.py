"""A run's results stay true under hostile files, divergence, failed saves and stop signals."""
from __future__ import annotations

import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

import relvit.training.run
from relvit.runs.checkpoints import read_checkpoint
from relvit.runs.files import OutputDirError, SaveError, atomic_write, claim_run_dir
from relvit.training.run import train

from conftest import REPO, TINY, compose_config, subprocess_env


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    summary = train(compose_config(tmp, [*TINY, "task=downstream"]))
    return summary["best_checkpoint"]


def crafted(tmp_path, best: str, node: str, value) -> str:
    """A copy of a real checkpoint whose saved config puts ``value`` at ``node``."""
    content = read_checkpoint(best)
    content["relvit_config"][node] = value
    path = tmp_path / f"crafted_{node}.ckpt"
    torch.save(content, path)
    return str(path)


def test_a_checkpoint_config_cannot_call_torch_save(cli, tmp_path, trained):
    target = tmp_path / "written_by_the_checkpoint.pt"
    ckpt = crafted(tmp_path, trained, "optimizer", {"_target_": "torch.save", "obj": [1, 2], "f": str(target)})
    code, _, err = cli("evaluate.py", f"ckpt_path={ckpt}")
    assert code == 2
    assert "node optimizer names _target_ 'torch.save'" in err and "Traceback" not in err
    assert not target.exists()
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("metrics.json"))


def test_a_checkpoint_config_cannot_unpickle_embedded_bytes(cli, tmp_path, trained):
    marker = tmp_path / "ran.txt"

    class Payload:  # what a pickle could run on load
        def __reduce__(self):
            return (open, (str(marker), "w"))

    buffer = io.BytesIO()
    torch.save(Payload(), buffer)
    node = {"_target_": "torch.load", "f": {"_target_": "io.BytesIO", "initial_bytes": list(buffer.getvalue())},
            "weights_only": False}
    ckpt = crafted(tmp_path, trained, "scheduler", node)
    code, _, err = cli("evaluate.py", f"ckpt_path={ckpt}")
    assert code == 2 and "node scheduler names _target_ 'torch.load'" in err
    assert not marker.exists()


def test_an_interpolation_cannot_build_a_node_after_the_check(cli, tmp_path, trained):
    target = tmp_path / "decoded.pt"
    decoded = "${oc.decode:'{_target_: torch.save, obj: 1, f: " + str(target) + "}'}"
    ckpt = crafted(tmp_path, trained, "optimizer", decoded)
    code, _, err = cli("evaluate.py", f"ckpt_path={ckpt}")
    assert code == 2 and "names _target_ 'torch.save'" in err
    assert not target.exists()


def test_an_honest_checkpoint_still_evaluates(cli, trained):
    code, out, err = cli("evaluate.py", f"ckpt_path={trained}")
    assert code == 0, err[-2000:]
    assert "metrics written to" in out


def test_a_diverging_run_stops_in_its_first_epoch_and_keeps_json_strict(cli, tmp_path):
    code, out, err = cli("train.py", *TINY, "task=downstream", "optimizer.lr=1e6", "trainer.max_epochs=3",
                         f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 1, err[-2000:]
    # the loss of some step, or (on processors where every loss stays finite) the weights it left
    found = re.search(r"error: non-finite (loss at step \d+ \(epoch 0\): \S*train/clf_loss|weights after step \d+ \(epoch 0\))", err)
    assert found and "training stopped" in err, err[-2000:]
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()
    metrics = tmp_path / "run" / "metrics.json"
    if metrics.exists():
        json.loads(metrics.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))


class Spoil(L.Callback):
    """Sets one weight to ``value`` after the last training step of the first epoch, whose loss was finite."""

    def __init__(self, value: float):
        self.value = value

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            with torch.no_grad():
                pl_module.backbone.vit.patch_embed.proj.weight.view(-1)[0] = self.value


@pytest.mark.parametrize(("value", "message"), [
    (float("nan"), "error: non-finite weights after step 3 (epoch 0): backbone.vit.patch_embed.proj.weight not finite"),
    # finite weights whose activations overflow
    (3e38, "error: non-finite validation loss after step 3 (epoch 0): val/clf_loss, val/loss not finite"),
])
def test_non_finite_weights_or_validation_losses_stop_the_run(cli, tmp_path, monkeypatch, value, message):
    make_trainer = relvit.training.run.make_trainer
    monkeypatch.setattr(relvit.training.run, "make_trainer", lambda cfg, guards=(): make_trainer(cfg, [*guards, Spoil(value)]))
    code, out, err = cli("train.py", *TINY, "task=downstream", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 1, err[-2000:]
    assert message in err and "training stopped" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists() and not (tmp_path / "run" / "metrics.json").exists()


def test_metrics_json_is_strict(tmp_path):
    from relvit.runs.files import write_json

    write_json(tmp_path / "m.json", {"val": {"loss": float("nan"), "acc": 0.5}, "x": [float("inf")]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"val": {"loss": None, "acc": 0.5}, "x": [None]}


def test_a_failed_save_names_the_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"previous")

    def disk_full(f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    with pytest.raises(SaveError, match=f"could not write {path}: No space left on device"):
        atomic_write(path, disk_full)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_save_killed_mid_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_write(path, lambda f: torch.save({"epoch": 1}, f))
    script = (
        "import os, signal, sys\n"
        "from relvit.runs.files import atomic_write\n"
        "def half(f):\n"
        "    f.write(b'x' * 100000); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        f"atomic_write({str(path)!r}, half)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert read_checkpoint(path) == {"epoch": 1}


def test_a_run_that_cannot_write_its_checkpoint_fails(cli, tmp_path):
    blocked = tmp_path / "ckpts" / "best.ckpt"
    blocked.mkdir(parents=True)  # a directory where the file must go
    code, out, err = cli("train.py", *TINY, "task=downstream", f"callbacks.model_checkpoint.dirpath={tmp_path / 'ckpts'}")
    assert code == 1, err[-2000:]
    assert f"error: could not write {blocked}" in err and "Traceback" not in err
    assert "final test accuracy" not in out


class FullDisk:
    """A binary file on a disk that fills up after ``room`` bytes."""

    def __init__(self, file, room: int = 1000):
        self.file = file
        self.room = room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_a_full_disk_stops_the_run_with_one_line_naming_the_checkpoint(cli, tmp_path, monkeypatch):
    fdopen = os.fdopen
    # the checkpoints are the run's binary writes; torch's zip writer hides their OSError
    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: FullDisk(fdopen(fd, mode, *a, **k)) if "b" in mode else fdopen(fd, mode, *a, **k))
    code, out, err = cli("train.py", *TINY, "task=downstream", f"hydra.run.dir={tmp_path / 'run'}")
    checkpoints = tmp_path / "run" / "checkpoints"
    assert code == 1, err[-2000:]
    assert [line for line in err.splitlines() if "error" in line.lower()] == [
        f"error: could not write {checkpoints / 'best.ckpt'}: No space left on device"]
    assert "Traceback" not in err
    assert list(checkpoints.iterdir()) == []  # neither a truncated checkpoint nor its temp file


def test_two_runs_cannot_claim_one_dir(tmp_path):
    claim_run_dir(tmp_path / "run")
    with pytest.raises(OutputDirError, match="already holds a run"):
        claim_run_dir(tmp_path / "run")


def test_a_refused_run_leaves_the_existing_run_byte_for_byte(cli, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = cli("train.py", *TINY, "task=downstream", f"hydra.run.dir={run_dir}")
    assert code == 0, err[-2000:]
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code, _, err = cli("train.py", *TINY, "task=joint", f"hydra.run.dir={run_dir}")
    assert code == 2 and "already holds a run" in err
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before


def launch(cwd, *args):
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path, proc, timeout=300):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() - start < timeout
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_stop_signal_saves_the_step_and_says_how_to_resume(tmp_path, sig):
    # far more epochs than the signal needs to arrive: 50 (8 s here) finished first once on a loaded machine
    args = [*TINY, "task=downstream", "trainer.max_epochs=1000", "trainer.limit_train_batches=null", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = launch(tmp_path, *args)
    wait_for(tmp_path / "run" / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert f"stopped by {signal.Signals(sig).name} at epoch" in err and "Traceback" not in err
    hint = next(line for line in err.splitlines() if line.startswith("to resume: "))
    assert f"resume={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}" in hint
    saved = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert 0 < saved["global_step"] < 1000 * 20


def paused_run(tmp_path, phase: str, *args: str) -> tuple[subprocess.Popen, Path]:
    """train.py paused in ``phase`` (tests/stop_points.py): its marker is there once it waits for the signal."""
    marker = tmp_path / f"in_{phase}"
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "stop_points.py"), "pause-in", phase, str(marker), *args],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    wait_for(marker, proc)
    return proc, marker


@pytest.mark.parametrize("phase", ["fit", "validation"])
def test_sigterm_in_training_or_its_validation_saves_a_checkpoint_that_resumes(tmp_path, phase):
    import shlex

    args = [*TINY, "task=downstream", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'a'}"]
    proc, _ = paused_run(tmp_path, phase, *args)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err
    # in training: the step it came in; in a validation: the start of the next epoch
    assert read_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")["global_step"] == (2 if phase == "fit" else 3)
    hint = next(line for line in err.splitlines() if line.startswith("to resume: "))
    command = shlex.split(hint.removeprefix("to resume: "))
    assert command[:2] == ["python", "train.py"]
    done = subprocess.run([sys.executable, str(REPO / "train.py"), *command[2:], f"hydra.run.dir={tmp_path / 'b'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["best_checkpoint"].startswith(str(tmp_path / "b"))
    assert read_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["epoch"] == 1


def test_sigterm_in_setup_stops_before_anything_is_trained(tmp_path):
    proc, _ = paused_run(tmp_path, "setup", *TINY, "task=downstream", f"hydra.run.dir={tmp_path / 'a'}")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM before training started; nothing was trained yet, nothing saved" in err
    assert "Traceback" not in err and not (tmp_path / "a" / "checkpoints").exists()


def test_sigterm_in_the_final_test_keeps_the_finished_result(tmp_path):
    proc, _ = paused_run(tmp_path, "test", *TINY, "task=downstream", f"hydra.run.dir={tmp_path / 'a'}")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]  # training had finished: the run completes its evaluation
    summary = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert "test/acc" in summary["test"]
