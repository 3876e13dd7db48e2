"""Two-process DDP on CPU (gloo), started the way a user starts it: train.py with trainer=ddp.
Each run writes one set of outputs, and its metrics equal a one-process evaluation of its checkpoint."""
import json
import subprocess
import sys

import pytest
import torch

from relvit.config.checks import ConfigError
from relvit.evaluation.evaluate import evaluate
from relvit.runs.distributed import EvalShardSampler, adopt_parent_job, eval_shard, train_batches, train_shard

from conftest import REPO, TINY, compose_config, subprocess_env

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
