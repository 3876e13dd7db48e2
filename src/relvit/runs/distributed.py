"""One job on several processes: which process writes, how each rank's share of the data is cut,
and how every rank of a job finds rank zero's job (its overrides and its run dir).

Lightning starts the other ranks of a single-node job by re-running ``train.py``; under Hydra
that would compose a new time-stamped run dir, and with ``-m`` start a second sweep. Rank zero
therefore hands its job to them in ``RELVIT_PARENT_JOB``, and ``adopt_parent_job`` turns their
command line into exactly that job. Ranks started by torchrun or srun share one run id instead
(``RELVIT_RUN_ID``, read by conf/hydra/default.yaml).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DistributedSampler

from relvit.errors import ProcessDied

PARENT_JOB = "RELVIT_PARENT_JOB"
RUN_ID = "RELVIT_RUN_ID"
# what Lightning's launcher sets in rank zero's environment when it starts the other ranks
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def gpu_slot(job_num: int) -> list[int] | int:
    """``trainer.devices`` of job ``job_num`` in a parallel sweep on one machine: GPU ``job_num`` mod
    the number of GPUs, so that jobs running side by side use different GPUs (one device on CPU)."""
    count = torch.cuda.device_count()
    return [int(job_num) % count] if count else 1


OmegaConf.register_new_resolver("relvit_gpu_slot", gpu_slot, replace=True)


def global_rank() -> int:
    """This process's rank: from the process group once it exists, else from the launcher's variables."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if "LOCAL_RANK" in os.environ:
        # a rank that is local zero on another node is not rank zero
        return int(os.environ["LOCAL_RANK"]) + (1 if int(os.environ.get("NODE_RANK", 0)) else 0)
    return int(os.environ.get("SLURM_PROCID", 0))


def is_rank_zero() -> bool:
    return global_rank() == 0


def external_world_size() -> int:
    """How many processes torchrun or srun started for this job (1 when none did)."""
    return int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)


# ------------------------------------------------------------------------------------ data shards
def train_shard(n: int, rank: int, world: int, seed: int) -> torch.Tensor:
    """Indices of the training samples rank ``rank`` holds: a seeded permutation dealt out, so the
    shards are disjoint, cover all ``n`` samples and mix the classes."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[rank::world].sort().values


def train_batches(n: int, world: int, batch_size: int) -> int:
    """Training batches per epoch on every rank: the same count everywhere, or DDP would wait for
    a gradient that never comes."""
    return (n // world) // batch_size


def eval_shard(n: int, rank: int, world: int) -> range:
    """A contiguous, unpadded slice of an evaluation split: every sample is counted exactly once."""
    start = rank * n // world
    return range(start, (rank + 1) * n // world)


def process_group() -> tuple[int, int]:
    """(rank, world size) of the initialised process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rows of every process, in rank order: tensors [N_r, ...] (the same N_r within a process,
    any N_r across processes) -> [sum N_r, ...] on every process; unchanged on one process."""
    _, world = process_group()
    if world == 1:
        return tensors
    count = torch.tensor([len(tensors[0])], device=tensors[0].device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    gathered = []
    for t in tensors:
        padded = t.new_zeros(max(sizes), *t.shape[1:])  # all_gather needs one shape on every process
        padded[: len(t)] = t
        parts = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        gathered.append(torch.cat([part[:n] for part, n in zip(parts, sizes)]))
    return tuple(gathered)


class EvalShardSampler(DistributedSampler):
    """Serves this rank's ``eval_shard`` in order. A DistributedSampler (so Lightning keeps it), but
    without the padding that would count repeated samples in the metrics."""

    def __init__(self, dataset: Any, rank: int, world: int):
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=False, drop_last=False)
        self.indices = eval_shard(len(dataset), rank, world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# --------------------------------------------------------------- a process of the run dies
#: Exit code of a run that stopped because another of its processes died: resume it (EX_TEMPFAIL)
EXIT_PROCESS_DIED = 75
#: How a collective fails when a process it waits for has gone: gloo's and NCCL's words, lower case
GONE = ("connection closed by peer", "connection reset by peer", "broken pipe", "remote process exited",
        "nccl communicator was aborted", "nccl error: remote process")
#: Exit codes of a process stopped by a signal the run handles (128 + SIGINT, SIGUSR1, SIGTERM): it
#: stopped on purpose, and the collectives tell the others if they were not stopped too
STOP_CODES = (130, 138, 143)

_watch: dict[str, Any] = {"checkpoint": None, "procs": [], "reported": False}
_report_lock = threading.Lock()


def watch_processes(last_checkpoint: str | Path | None, resumed: str | Path | None = None) -> None:
    """Before a fit: a run whose other process dies stops with one line naming the process, when
    known, and ``last_checkpoint`` to resume (``ProcessDied``, exit code ``EXIT_PROCESS_DIED``); until
    that is written, the checkpoint this run ``resumed`` from, if any.

    Rank zero watches the ranks Lightning starts (Lightning's own watcher, which this replaces, kills
    every process, rank zero included, without a word); every rank turns a collective that fails
    because its peer has gone into ``ProcessDied`` (see ``process_died``).
    """
    _watch["checkpoint"] = Path(last_checkpoint) if last_checkpoint else None
    _watch["resumed"] = Path(resumed) if resumed else None
    _watch["reported"] = False
    from lightning.pytorch.strategies.launchers import subprocess_script

    subprocess_script._launch_process_observer = _watch_started_ranks


def process_died_message(rank: int | None, how: str | None) -> str:
    """One line: which process died and how (when known), and what to resume."""
    who = f"process rank {rank} of this run" if rank is not None else "another process of this run"
    last = next((p for p in (_watch["checkpoint"], _watch.get("resumed")) if p is not None and p.is_file()), None)
    if last is not None:
        then = f"its last checkpoint, {last}, can be resumed with resume={last}"
    else:
        then = "no checkpoint was saved yet: start it again"
    return f"{who} {how or 'died'}, so this run stopped; {then}"


def process_died(err: BaseException) -> ProcessDied | None:
    """``ProcessDied`` when ``err`` is a collective of a multi-process run failing because a process
    it waits for has gone; None for any other error."""
    world = max(process_group()[1], external_world_size())
    if world < 2:
        return None
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        # gloo's and NCCL's errors are RuntimeErrors (DistBackendError); a BrokenPipeError of the
        # process's own pipes is an OSError, and no sign of a dead peer
        if isinstance(cause, RuntimeError) and any(words in str(cause).lower() for words in GONE):
            break
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    else:
        return None
    dead = _dead_child()
    if dead is not None:  # rank zero knows which of the ranks it started died, and how
        return ProcessDied(process_died_message(*dead))
    return ProcessDied(process_died_message(1 - global_rank() if world == 2 else None, None))


def claim_report() -> bool:
    """True for the first caller only: one process-died line per process, whichever thread sees it first."""
    with _report_lock:
        first = not _watch["reported"]
        _watch["reported"] = True
    return first


def stop_started_ranks() -> None:
    """Kill the ranks this process started that still run (they would wait for it in vain)."""
    for proc in _watch["procs"]:
        if proc.poll() is None:
            proc.kill()


def _dead_child() -> tuple[int, str] | None:
    """(rank, how) of the first rank this process started that has ended with an error; None if none."""
    for i, proc in enumerate(_watch["procs"]):
        code = proc.poll()
        if code:
            return global_rank() + i + 1, f"was killed by {_signal_name(-code)}" if code < 0 else f"ended with exit code {code}"
    return None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _watch_started_ranks(child_processes: list[subprocess.Popen]) -> None:
    _watch["procs"] = child_processes
    threading.Thread(target=_watch_loop, args=(child_processes,), daemon=True, name="relvit-rank-watch").start()


def _watch_loop(procs: list[subprocess.Popen], period_s: float = 1.0) -> None:
    while True:
        time.sleep(period_s)
        codes = [proc.poll() for proc in procs]
        if all(code == 0 for code in codes) or any(code in STOP_CODES for code in codes):
            return
        dead = _dead_child()
        if dead is None:
            continue
        stop_started_ranks()
        if claim_report():
            print(f"error: {process_died_message(*dead)}", file=sys.stderr, flush=True)
        os._exit(EXIT_PROCESS_DIED)


# ------------------------------------------------------------------------- ranks under Hydra
def adopt_parent_job(argv: list[str]) -> list[str]:
    """The command line this process should run: for a rank that Lightning started, rank zero's job
    (its config, overrides and run dir); for ranks from torchrun / srun, the shared run id."""
    parent = os.environ.get(PARENT_JOB)
    local_rank = os.environ.get("LOCAL_RANK", "0")
    if parent and local_rank != "0":
        job = json.loads(parent)
        return [argv[0], f"--config-name={job['config_name']}", *job["overrides"],
                f"hydra.run.dir=\"{job['run_dir']}\"", "hydra.output_subdir=null",
                f"hydra.job.name={job['name']}_rank{local_rank}"]
    if parent is None and external_world_size() > 1:
        run_id = _launcher_run_id()
        if run_id:
            os.environ.setdefault(RUN_ID, run_id)
        if not is_rank_zero():  # rank zero alone saves the composed config
            return [*argv, "hydra.output_subdir=null", f"hydra.job.name=rank{global_rank()}"]
    return argv


def _launcher_run_id() -> str | None:
    """An id every rank of this launch shares: SLURM's job and step, or torchrun's rendezvous id."""
    if "SLURM_JOB_ID" in os.environ:
        return f"slurm-{os.environ['SLURM_JOB_ID']}-{os.environ.get('SLURM_STEP_ID', '0')}"
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return f"torchrun-{run_id}" if run_id and run_id != "none" else None


class DistributedJob(Callback):
    """Hydra callback: before a job, rank zero publishes it for the ranks Lightning will start;
    after it, the process group is closed and Lightning's launch variables are taken back, so the
    next job of a sweep starts its own ranks."""

    def __init__(self) -> None:
        self.saved: dict[str, str | None] = {}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if os.environ.get("LOCAL_RANK", "0") != "0" or external_world_size() > 1:
            return  # a started rank, or ranks that torchrun / srun started
        self.saved = {key: os.environ.get(key) for key in (*LAUNCH_VARIABLES, PARENT_JOB)}
        hydra = config.hydra
        os.environ[PARENT_JOB] = json.dumps({
            "config_name": hydra.job.config_name, "overrides": list(hydra.overrides.task),
            "run_dir": hydra.runtime.output_dir, "name": hydra.job.name,
        })

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.saved = {}


def requeued_checkpoint(output_dir: Path) -> Path | None:
    """``checkpoints/last.ckpt`` of this run dir when SLURM has requeued the job (after a preemption
    or its time limit): the job resumes where it stopped, in its own run dir. None otherwise."""
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0 and last.is_file():
        return last
    return None
