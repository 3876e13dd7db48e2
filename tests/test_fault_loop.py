"""Killed at random moments and resumed each time, a run ends with the uninterrupted run's metrics."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relvit.runs.checkpoints import read_checkpoint

from conftest import REPO, TINY, subprocess_env, write_jpeg_folder

# upstream: the per-patch augmentation, crops and dropout all draw random numbers
EPOCHS = 4
ARGS = [*TINY, "task=upstream", f"trainer.max_epochs={EPOCHS}", "trainer.limit_train_batches=10", "backbone.drop_path_rate=0.1"]


def start(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *ARGS, f"hydra.run.dir={run_dir}", *extra],
                            cwd=run_dir.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def latest_checkpoint(attempts: list[Path]) -> Path | None:
    for run_dir in reversed(attempts):
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            read_checkpoint(last)  # a kill must never leave a damaged file under this name
            return last
    return None


def metrics_of(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "metrics.json").read_text())
    return {"val": summary["val"], "test": summary["test"]}


def wait_for_claim(proc: subprocess.Popen, run_dir: Path) -> None:
    """Until the run has claimed its dir (imports and start-up done) or has ended."""
    while proc.poll() is None and not (run_dir / "run.json").exists():
        time.sleep(0.02)


def fault_loop(tmp_path: Path, kills_wanted: int, seed: int) -> dict:
    """Kill runs at random moments of their training and resume each from the newest ``last.ckpt``;
    a chain that ends before all kills are spent is checked and a new one started from scratch."""
    reference = start(tmp_path / "reference")
    wait_for_claim(reference, tmp_path / "reference")
    claimed = time.time()
    assert reference.wait(timeout=900) == 0, reference.stderr.read()[-2000:]
    span = time.time() - claimed
    rng = random.Random(seed)
    chains: list[list[Path]] = [[]]
    kills = resumes = 0
    finished = []
    while kills < kills_wanted or not finished:
        attempts = chains[-1]
        run_dir = tmp_path / f"attempt_{sum(map(len, chains))}"
        last = latest_checkpoint(attempts)
        attempts.append(run_dir)
        proc = start(run_dir, *([f"resume={last}"] if last else []))
        resumes += last is not None
        wait_for_claim(proc, run_dir)
        if last is None:  # a chain's first run is killed after its first checkpoint, so there is a resume
            while proc.poll() is None and not (run_dir / "checkpoints" / "last.ckpt").exists():
                time.sleep(0.02)
        if kills < kills_wanted:
            # a moment within what is left of this run's training
            done = read_checkpoint(run_dir / "checkpoints" / "last.ckpt" if last is None else last)["epoch"] + 1
            left = max(0.0, 1.0 - done / EPOCHS)
            try:
                proc.wait(timeout=rng.uniform(0.0, 0.95) * span * left)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                kills += 1
                continue
        assert proc.wait(timeout=900) == 0, proc.stderr.read()[-2000:]
        summary = json.loads((run_dir / "metrics.json").read_text())
        assert Path(summary["best_checkpoint"]).parent == run_dir / "checkpoints"
        finished.append(run_dir)
        chains.append([])
    reference_metrics = metrics_of(tmp_path / "reference")
    equal = sum(metrics_of(run_dir) == reference_metrics for run_dir in finished)
    return {"kills": kills, "resumes": resumes, "runs": len(finished), "equal": equal}


def test_three_kills_then_the_same_metrics(tmp_path):
    result = fault_loop(tmp_path, kills_wanted=3, seed=0)
    print(f"fault loop: {result}")
    assert result["kills"] == 3 and result["resumes"] >= 1
    assert result["equal"] == result["runs"]


@pytest.mark.slow
def test_twenty_kills_then_the_same_metrics(tmp_path):
    result = fault_loop(tmp_path, kills_wanted=20, seed=1)
    print(f"fault loop: {result}")
    assert result["kills"] == 20 and result["resumes"] >= 10
    assert result["equal"] == result["runs"]


# ----------------------------------------------------------------- SIGTERM at chosen steps
STEPS_PER_EPOCH = 4
STOPPED = [*TINY, "task=upstream", "trainer.max_epochs=3", f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
           "backbone.drop_path_rate=0.1"]
STOP_POINTS = REPO / "tests" / "stop_points.py"


def run_train(run_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, f"hydra.run.dir={run_dir}"], cwd=run_dir.parent, env=env,
                          capture_output=True, text=True, timeout=900)


def kill_steps(rng: random.Random, epochs: int) -> list[int]:
    """One step per epoch: the first epoch's last step (saved as the next epoch starts), then a step at
    random inside each later epoch. A stop in the epoch after a resume from an epoch's edge is where
    Lightning's loop counters went wrong (the resume after it replayed that epoch from its first batch)."""
    return [STEPS_PER_EPOCH - 1] + [epoch * STEPS_PER_EPOCH + rng.randrange(STEPS_PER_EPOCH - 1) for epoch in range(1, epochs)]


def stopped_and_resumed(tmp_path: Path, env: dict[str, str], steps: list[int], args: list[str] = STOPPED) -> dict:
    """The metrics of a run of ``args`` sent SIGTERM at the start of each of ``steps`` and resumed after each."""
    last = None
    for i, step in enumerate(steps):
        resume = [f"resume={last}"] if last else [*args]
        done = run_train(tmp_path / f"stopped_{i}", env, str(STOP_POINTS), "kill-at-step", str(step), *resume)
        assert done.returncode == 143, done.stderr[-2000:]
        last = tmp_path / f"stopped_{i}" / "checkpoints" / "last.ckpt"
        assert read_checkpoint(last)["global_step"] == step + 1  # the step the signal came in, finished and saved
    done = run_train(tmp_path / "finished", env, str(REPO / "train.py"), f"resume={last}")
    assert done.returncode == 0, done.stderr[-2000:]
    return metrics_of(tmp_path / "finished")


@pytest.mark.parametrize("capability", [None, "avx2"])
def test_sigterm_mid_epoch_in_every_epoch_then_the_same_metrics(tmp_path, capability):
    # whether a resume is exact must not depend on the kernels ATen picks (AVX-512 or AVX2 on this CPU)
    env = subprocess_env(**({"ATEN_CPU_CAPABILITY": capability} if capability else {}))
    done = run_train(tmp_path / "reference", env, str(REPO / "train.py"), *STOPPED)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = kill_steps(random.Random(capability or "default"), epochs=3)
    assert stopped_and_resumed(tmp_path, env, steps) == metrics_of(tmp_path / "reference")


@pytest.mark.slow
def test_sigterm_at_many_random_steps_then_the_same_metrics(tmp_path):
    env = subprocess_env()
    done = run_train(tmp_path / "reference", env, str(REPO / "train.py"), *STOPPED)
    assert done.returncode == 0, done.stderr[-2000:]
    rng = random.Random(2)
    steps = sorted(rng.sample(range(3 * STEPS_PER_EPOCH), 8))  # epoch ends and the last step included
    assert stopped_and_resumed(tmp_path, env, steps) == metrics_of(tmp_path / "reference")


# ------------------------------------------------- the same for image files streamed by workers
def streamed(root: Path, epochs: int) -> list[str]:
    """An image folder of small JPEG files decoded by two workers (random resized crops and flips per
    image in the workers, per-patch augmentation and dropout in the model)."""
    if not (root / "train").exists():
        write_jpeg_folder(root / "train", per_class=30)
        write_jpeg_folder(root / "test", per_class=6, seed=1)
    return [*TINY, "task=upstream", "dataset=image_folder", f"dataset.root={root}", "dataset.image_size=16",
            "dataset.patch_size=4", "data.batch_size=8", "data.num_workers=2", f"trainer.max_epochs={epochs}",
            f"trainer.limit_train_batches={STEPS_PER_EPOCH}", "backbone.drop_path_rate=0.1"]


def test_streamed_image_files_sigterm_mid_epoch_then_the_same_metrics(tmp_path):
    env = subprocess_env()
    args = streamed(tmp_path / "images", epochs=2)
    done = run_train(tmp_path / "reference", env, str(REPO / "train.py"), *args)
    assert done.returncode == 0, done.stderr[-2000:]
    # in the second epoch: the resumed run's loader is made before the checkpoint gives it its epoch
    step = STEPS_PER_EPOCH + random.Random("default").randrange(STEPS_PER_EPOCH - 1)
    assert stopped_and_resumed(tmp_path, env, [step], args) == metrics_of(tmp_path / "reference")


@pytest.mark.slow
@pytest.mark.parametrize("capability", [None, "avx2"])
def test_streamed_image_files_sigterm_at_many_random_steps_then_the_same_metrics(tmp_path, capability):
    # the batches and their augmentation come from the loader; the kernels ATen picks must not matter either
    env = subprocess_env(**({"ATEN_CPU_CAPABILITY": capability} if capability else {}))
    args = streamed(tmp_path / "images", epochs=3)
    done = run_train(tmp_path / "reference", env, str(REPO / "train.py"), *args)
    assert done.returncode == 0, done.stderr[-2000:]
    rng = random.Random(capability or "streamed")
    steps = sorted(rng.sample(range(3 * STEPS_PER_EPOCH), 6))  # epoch ends and the last step included
    assert stopped_and_resumed(tmp_path, env, steps, args) == metrics_of(tmp_path / "reference")
