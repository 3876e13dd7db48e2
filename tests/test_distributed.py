"""Two-process DDP on CPU (gloo), started the way a user starts it: train.py with trainer=ddp.
Each run writes one set of outputs, and its metrics equal a one-process evaluation of its checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from relvit.config.checks import ConfigError
from relvit.evaluation.evaluate import evaluate
from relvit.runs.distributed import EvalShardSampler, adopt_parent_job, eval_shard, train_batches, train_shard

from conftest import REPO, TINY, compose_config, subprocess_env, write_jpeg_folder

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
# whole validation and test splits: a per-rank batch limit would evaluate different samples
TINY_DDP = [o for o in TINY if not o.startswith(("trainer.limit_val", "trainer.limit_test"))]


def run_train(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=subprocess_env(OMP_NUM_THREADS="1"))


def run_dirs(root):
    return sorted(p for p in root.glob("outputs/*/runs/*") if p.is_dir())


@pytest.mark.parametrize("task", ["upstream", "megapatch", "joint"])
def test_two_process_run_matches_a_one_process_evaluation(task, tmp_path):
    # side 4 on the 4 x 4 digits grid uses every cut: mega-patch evaluation draws its cuts at random
    # otherwise, and two evaluations of one checkpoint would differ by more than the tolerance
    extra = ["task.megapatch.side=4"] if task == "megapatch" else []
    done = run_train(f"task={task}", *TINY_DDP, *DDP, *extra, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)  # both ranks wrote into the one dir rank zero resolved
    assert done.stdout.count("best checkpoint:") == 1  # one printed table
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    trained = json.loads((run_dir / "metrics.json").read_text())

    cfg = compose_config(tmp_path / "eval", [f"ckpt_path={trained['best_checkpoint']}", "trainer=cpu"], config_name="evaluate")
    alone = evaluate(cfg, overrides=["trainer=cpu"])
    for split in ("val", "test"):
        # the kNN monitor's figures come from a callback of training; evaluate.py protocol=knn measures them
        judged = {key: value for key, value in trained[split].items() if "knn" not in key}
        assert judged.keys() == alone[split].keys()
        for key, value in judged.items():
            assert value == pytest.approx(alone[split][key], abs=1e-4), key


@pytest.mark.slow
def test_two_process_run_of_streamed_image_files(tmp_path):
    """Image files decoded by two workers per rank: each rank takes its shard, as many batches as the
    other (no DistributedSampler), and the run ends."""
    from relvit.runs.checkpoints import read_checkpoint

    root = tmp_path / "images"
    write_jpeg_folder(root / "train", per_class=30)
    write_jpeg_folder(root / "test", per_class=6, seed=1)
    done = run_train("task=upstream", *TINY_DDP, *DDP, "dataset=image_folder", f"dataset.root={root}", "dataset.image_size=16",
                     "dataset.patch_size=4", "data.batch_size=8", "data.num_workers=2", "trainer.max_epochs=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2 * 3  # trainer.limit_train_batches=3
    assert json.loads((run_dir / "metrics.json").read_text())["test"]


def test_a_sweep_of_ddp_jobs_writes_one_sweep_dir(tmp_path):
    done = run_train("-m", "task=joint", *TINY_DDP, *DDP, "seed=1,2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = list((tmp_path / "multirun").iterdir())
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job in jobs:
        assert (sweep / job / "metrics.json").is_file()
        assert sorted(p.name for p in (sweep / job / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not (tmp_path / "outputs").exists()


def test_ranks_started_by_torchrun_share_one_run_dir(tmp_path):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(REPO / "train.py"), "task=joint", *TINY, *DDP], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env=subprocess_env(OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    assert run_dir.name.startswith("torchrun-")
    assert (run_dir / "metrics.json").is_file() and done.stdout.count("best checkpoint:") == 1


def test_training_shards_are_disjoint_and_cover_the_split():
    n, world = 1295, 2
    shards = [train_shard(n, rank, world, seed=7) for rank in range(world)]
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert sorted(torch.cat(shards).tolist()) == list(range(n))
    assert torch.equal(shards[0], train_shard(n, 0, world, seed=7))  # the same in every run
    assert train_batches(n, world, 64) == 10  # 647 images on the smaller shard: 10 full batches each


def test_evaluation_shards_count_every_sample_once():
    n = 143
    parts = [list(eval_shard(n, rank, 2)) for rank in range(2)]
    assert parts[0] + parts[1] == list(range(n))
    sampler = EvalShardSampler(list(range(n)), rank=1, world=2)
    assert list(sampler) == parts[1] and len(sampler) == len(parts[1])


def test_in_memory_ranks_hold_their_own_shard_on_their_device(tiny_cfg):
    from relvit.training.run import build

    run = build(tiny_cfg("task=joint"))
    dm = run.datamodule

    class FakeTrainer:  # what the data module reads of a DDP trainer on rank `global_rank`
        world_size = 2
        current_epoch = 0

        def __init__(self, rank):
            self.global_rank = rank
            self.strategy = type("S", (), {"root_device": torch.device("cpu")})()
            # the batches of this epoch taken so far, where a training loader starts (none yet)
            current = type("P", (), {"processed": 0})()
            self.fit_loop = type("F", (), {"epoch_loop": type("E", (), {"batch_progress": type("B", (), {"current": current})()})()})()

    loaders = []
    for rank in range(2):
        dm.trainer = FakeTrainer(rank)
        loaders.append(dm.train_dataloader())
    dm.trainer = None
    train = dm.splits["train"]
    held = [loader.labels.numel() for loader in loaders]
    assert sum(held) == len(train) and abs(held[0] - held[1]) <= 1
    assert len(loaders[0]) == len(loaders[1]) == train_batches(len(train), 2, dm.batch_size)
    first = [next(iter(loader))[0] for loader in loaders]
    assert not torch.equal(first[0], first[1])  # each rank shuffles its own images
    assert torch.equal(next(iter(loaders[0]))[0], first[0])  # and the order repeats with the seed and epoch
    dm.batch_size = len(train) // 2 + 1  # fits the split, not one rank's half of it
    dm.trainer = FakeTrainer(0)
    with pytest.raises(ConfigError, match=rf"data\.batch_size={dm.batch_size} is larger than the {len(train) // 2} training images each of the 2"):
        dm.train_dataloader()
    dm.trainer = None


def test_ranks_that_lightning_starts_run_rank_zeros_job(monkeypatch):
    job = {"config_name": "train", "overrides": ["seed=2", "task=joint"], "run_dir": "/runs/a b", "name": "train"}
    monkeypatch.setenv("RELVIT_PARENT_JOB", json.dumps(job))
    monkeypatch.setenv("LOCAL_RANK", "1")
    argv = adopt_parent_job(["train.py", "-m", "seed=1,2", "hydra.run.dir=elsewhere"])
    assert argv == ["train.py", "--config-name=train", "seed=2", "task=joint", 'hydra.run.dir="/runs/a b"',
                    "hydra.output_subdir=null", "hydra.job.name=train_rank1"]
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert adopt_parent_job(["train.py", "seed=1"]) == ["train.py", "seed=1"]


def test_ranks_from_srun_share_one_run_id(monkeypatch):
    for key in ("RELVIT_PARENT_JOB", "RELVIT_RUN_ID", "RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.setenv(key, "")  # recorded, so that what the code under test sets is undone after the test
        monkeypatch.delenv(key)
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    argv = adopt_parent_job(["train.py", "trainer=ddp"])
    import os

    assert os.environ["RELVIT_RUN_ID"] == "slurm-123-0"
    assert argv == ["train.py", "trainer=ddp", "hydra.output_subdir=null", "hydra.job.name=rank3"]


def test_a_requeued_slurm_job_resumes_in_its_own_run_dir(tiny_cfg, monkeypatch, caplog):
    import logging

    from omegaconf import open_dict

    from relvit.runs.checkpoints import read_checkpoint
    from relvit.training.run import train

    cfg = tiny_cfg("task=joint")
    first = train(cfg)
    last = read_checkpoint(first["output_dir"] + "/checkpoints/last.ckpt")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # what SLURM sets in a requeued job
    caplog.set_level(logging.INFO)
    with open_dict(cfg):
        cfg.trainer.max_epochs = 2
    again = train(cfg)
    assert again["output_dir"] == first["output_dir"]
    resumed = read_checkpoint(again["output_dir"] + "/checkpoints/last.ckpt")
    assert f"Restoring states from the checkpoint path at {first['output_dir']}/checkpoints/last.ckpt" in caplog.text
    assert resumed["global_step"] == 2 * last["global_step"]  # it went on, rather than starting over


def test_parallel_jobs_on_one_machine_take_one_gpu_each(monkeypatch):
    from relvit.runs.distributed import gpu_slot

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [gpu_slot(k) for k in range(6)] == [[0], [1], [2], [3], [0], [1]]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert gpu_slot(3) == 1  # no GPU: one CPU device


@pytest.mark.slow
def test_two_phase_recipe_under_ddp_matches_one_process_evaluations(tmp_path):
    """Upstream then fine-tuning (the downstream task), both phases on two processes."""
    done = run_train("task=upstream", 'finetune=["task=downstream","trainer.max_epochs=2"]', *TINY_DDP, *DDP,
                     "trainer.max_epochs=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    assert done.stdout.count("final test accuracy:") == 1
    for phase_dir in (run_dir, run_dir / "finetune"):
        trained = json.loads((phase_dir / "metrics.json").read_text())
        cfg = compose_config(tmp_path / phase_dir.name, [f"ckpt_path={trained['best_checkpoint']}", "trainer=cpu"],
                             config_name="evaluate")
        alone = evaluate(cfg, overrides=["trainer=cpu"])
        for split in ("val", "test"):
            for key, value in trained[split].items():
                assert value == pytest.approx(alone[split][key], abs=1e-4), key


def _gather_on_rank(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from relvit.runs.distributed import gather_rows

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        n = 3 if rank == 0 else 5  # uneven banks: the last batch of an epoch can differ between processes
        features = torch.full((n, 2), float(rank)) + torch.arange(n, dtype=torch.float)[:, None]
        gathered = gather_rows(features, torch.full((n,), rank))
        torch.save(gathered, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gathered_rows_reach_every_process_in_rank_order(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_gather_on_rank, args=(free_port(), str(tmp_path)), nprocs=2)
    (f0, y0), (f1, y1) = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert torch.equal(f0, f1) and torch.equal(y0, y1)
    assert y0.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert f0[:, 0].tolist() == [0, 1, 2, 1, 2, 3, 4, 5]


def _features_on_rank(rank: int, port: int, out_dir: str, config: str) -> None:
    import lightning as L
    import torch.distributed as dist
    from omegaconf import OmegaConf

    from relvit.probes.features import extract_features
    from relvit.training.run import build

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        cfg = OmegaConf.create(config)
        L.seed_everything(cfg.seed, verbose=False)
        run = build(cfg)
        feats = extract_features(run.module.backbone, run.datamodule, "val", False, sharded=True)
        torch.save((feats.by_kind, feats.labels), f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sharded_feature_extraction_equals_one_process(tiny_cfg, tmp_path):
    """What the kNN monitor computes under DDP: each process encodes half the split, all get all of it."""
    import lightning as L
    import torch.multiprocessing as mp
    from omegaconf import OmegaConf

    from relvit.probes.features import extract_features
    from relvit.training.run import build

    cfg = tiny_cfg("task=upstream")
    mp.spawn(_features_on_rank, args=(free_port(), str(tmp_path), OmegaConf.to_yaml(cfg, resolve=True)), nprocs=2)
    L.seed_everything(cfg.seed, verbose=False)
    run = build(cfg)
    alone = extract_features(run.module.backbone, run.datamodule, "val", False)
    for rank in (0, 1):
        by_kind, labels = torch.load(tmp_path / f"{rank}.pt")
        assert torch.equal(labels, alone.labels)
        assert by_kind.keys() == alone.by_kind.keys()
        for kind, features in by_kind.items():
            torch.testing.assert_close(features, alone.by_kind[kind], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ a process of the run dies
STOP_POINTS = REPO / "tests" / "stop_points.py"


def killed_rank(tmp_path, rank: int) -> tuple[float, int, str]:
    """A two-process run in its second epoch (the first one's last.ckpt saved), rank ``rank`` killed
    with SIGKILL once both ranks have started the step: (seconds until the other rank ended, its exit
    code, the run's stderr). Each rank writes a marker as it starts the step; the killed one waits
    there, and the other waits in the step's collectives for it."""
    marks = tmp_path / "marks"
    marks.mkdir()
    args = ["task=upstream", *TINY_DDP, *DDP, "trainer.max_epochs=3", "trainer.limit_train_batches=2",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen([sys.executable, str(STOP_POINTS), "mark-ranks", str(marks), "3", str(rank), *args],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env(OMP_NUM_THREADS="1"))
    try:
        while not all((marks / f"rank{r}.pid").exists() for r in (0, 1)):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        os.kill(int((marks / f"rank{rank}.pid").read_text()), signal.SIGKILL)
        killed = time.monotonic()
        # the other rank writes to the same stderr: its end is the end of the stream
        _, stderr = proc.communicate(timeout=120)
        elapsed = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    code = proc.returncode if rank == 1 else int((marks / "rank1.exit").read_text())
    return elapsed, code, stderr


def assert_one_line_naming_the_checkpoint(tmp_path, stderr: str, dead: int) -> None:
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    line = (f"error: process rank {dead} of this run {{how}}, so this run stopped; its last checkpoint, {last}, "
            f"can be resumed with resume={last}")
    said = [text for text in stderr.splitlines() if text.startswith("error:")]
    assert said in ([line.format(how="died")], [line.format(how="was killed by SIGKILL")]), stderr[-3000:]
    assert "Traceback" not in stderr and "Connection closed by peer" not in stderr


@pytest.mark.slow
def test_rank_zero_killed_the_other_rank_stops_with_one_line_naming_the_checkpoint(tmp_path):
    elapsed, code, stderr = killed_rank(tmp_path, 0)
    assert code == 75 and elapsed < 60, (code, elapsed, stderr[-3000:])
    assert_one_line_naming_the_checkpoint(tmp_path, stderr, dead=0)


@pytest.mark.slow
def test_rank_one_killed_rank_zero_stops_with_one_line_naming_the_checkpoint(tmp_path):
    elapsed, code, stderr = killed_rank(tmp_path, 1)
    assert code == 75 and elapsed < 60, (code, elapsed, stderr[-3000:])
    assert_one_line_naming_the_checkpoint(tmp_path, stderr, dead=1)


def test_only_a_collective_whose_peer_is_gone_counts_as_a_dead_process(monkeypatch, tmp_path):
    from relvit.runs import distributed

    gone = RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:44965. "
                        "This is typically caused by a remote worker crashing.")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.process_died(gone) is None  # one process: nothing else can have died
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    last = tmp_path / "last.ckpt"
    from lightning.pytorch.strategies.launchers import subprocess_script

    for key in ("procs", "checkpoint", "resumed", "reported"):  # put back after the test
        monkeypatch.setitem(distributed._watch, key, [] if key == "procs" else None)
    monkeypatch.setattr(subprocess_script, "_launch_process_observer", subprocess_script._launch_process_observer)
    distributed.watch_processes(last)
    assert str(distributed.process_died(gone)) == ("process rank 0 of this run died, so this run stopped; "
                                                   "no checkpoint was saved yet: start it again")
    last.write_bytes(b"saved")
    wrapped = RuntimeError("training failed")
    wrapped.__cause__ = gone
    assert str(distributed.process_died(wrapped)).endswith(f"its last checkpoint, {last}, can be resumed with resume={last}")
    assert distributed.process_died(RuntimeError("CUDA out of memory")) is None
    assert distributed.process_died(BrokenPipeError(32, "Broken pipe")) is None  # this process's own pipe
    assert distributed.claim_report() and not distributed.claim_report()  # one line, whichever thread sees it first


# two gloo processes without a trainer: rank 1 waits in an all-reduce for rank 0, which is killed
RANK_IN_A_COLLECTIVE = """
import os, sys, time
from pathlib import Path
import torch, torch.distributed as dist
from relvit.cli import exit_on_user_error
from relvit.runs.distributed import process_died, watch_processes

rank, port, marks = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
os.environ["WORLD_SIZE"] = "2"
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
watch_processes(marks / "last.ckpt")
(marks / f"rank{rank}.tmp").write_text(str(os.getpid()))
os.replace(marks / f"rank{rank}.tmp", marks / f"rank{rank}.pid")

def step(cfg):
    if rank == 0:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.05)
        sys.exit(99)
    try:
        dist.all_reduce(torch.ones(1))
    except Exception as err:
        died = process_died(err)
        raise (died or err) from None

exit_on_user_error(step)(None)
"""


def test_a_collective_whose_peer_is_killed_ends_at_once_with_one_line(tmp_path):
    """The short version of the killed-rank tests (marked slow: two whole runs): the words of a real
    gloo failure are recognised, and the survivor says so in one line and exits 75 at once."""
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "last.ckpt").write_bytes(b"saved")
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", RANK_IN_A_COLLECTIVE, str(rank), str(port), str(marks)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=subprocess_env(OMP_NUM_THREADS="1")) for rank in (0, 1)]
    try:
        while not all((marks / f"rank{r}.pid").exists() for r in (0, 1)):
            assert all(p.poll() is None for p in procs), [p.stderr.read()[-2000:] for p in procs]
            time.sleep(0.05)
        procs[0].kill()
        killed = time.monotonic()
        _, stderr = procs[1].communicate(timeout=60)
        elapsed = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    last = marks / "last.ckpt"
    assert procs[1].returncode == 75 and elapsed < 60, (procs[1].returncode, elapsed, stderr[-2000:])
    assert [line for line in stderr.splitlines() if line.strip()] == [
        f"error: process rank 0 of this run died, so this run stopped; its last checkpoint, {last}, "
        f"can be resumed with resume={last}"], stderr[-2000:]
    print(f"survivor ended {elapsed:.1f} s after the kill")
