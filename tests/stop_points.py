"""Runs train.py with a stop signal at a chosen point, for the fault tests (no timing, no race).

``python tests/stop_points.py kill-at-step N <train.py overrides>``: the run sends itself SIGTERM at
the start of global step N (a pre-emption at a known step).
``python tests/stop_points.py pause-in PHASE MARKER <overrides>``: when the run reaches PHASE (setup,
fit, validation, test) it writes MARKER and waits there until a stop signal has arrived, which the
test sends once it sees MARKER. It exits 99 if none comes within a few minutes.
``python tests/stop_points.py mark-ranks DIR STEP RANK <overrides>``: a DDP run whose every rank writes
``DIR/rank<r>.pid`` (its process id) at the start of global step STEP; rank RANK then waits there, to
be killed, and the others go on into the step's collectives (where they wait for it). A rank that
ends with SystemExit writes its exit code to ``DIR/rank<r>.exit``. The ranks Lightning starts run this
script again (it is their ``sys.argv[0]``) and find the three values in ``STOP_POINTS_MARK_RANKS``.
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from pathlib import Path

import lightning as L

import relvit.runs.guards
import relvit.training.run

TRAIN = Path(__file__).resolve().parents[1] / "train.py"
WAIT_S = 300
MARK_RANKS = "STOP_POINTS_MARK_RANKS"


class KillAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class Pause:
    """Writes the marker and sleeps until a stop signal is handled (sleep returns at each signal)."""

    def __init__(self, marker: str):
        self.marker = Path(marker)
        self.arrived = False
        handle = relvit.runs.guards.StopRequest._handle

        def recording(request, signum, frame):
            self.arrived = True
            handle(request, signum, frame)

        relvit.runs.guards.StopRequest._handle = recording  # type: ignore[method-assign]

    def __call__(self) -> None:
        if self.marker.exists():  # once per run
            return
        self.marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + WAIT_S
        while not self.arrived:
            if time.monotonic() > deadline:
                print(f"stop_points: no signal within {WAIT_S} s", file=sys.stderr, flush=True)
                os._exit(99)
            time.sleep(0.01)


class PauseInTrainer(L.Callback):
    def __init__(self, phase: str, pause: Pause):
        self.phase = phase
        self.pause = pause

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.phase == "fit" and trainer.global_step == 1:
            self.pause()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.phase == "validation" and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.pause()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.phase == "test":
            self.pause()


class MarkRanks(L.Callback):
    def __init__(self, folder: str, step: int, waiting_rank: int):
        self.folder = Path(folder)
        self.step = step
        self.waiting_rank = waiting_rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        rank = trainer.global_rank
        write_whole(self.folder / f"rank{rank}.pid", str(os.getpid()))
        if rank == self.waiting_rank:
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                time.sleep(0.05)
            print(f"stop_points: rank {rank} was not killed within {WAIT_S} s", file=sys.stderr, flush=True)
            os._exit(99)


def write_whole(path: Path, text: str) -> None:
    """Written beside and renamed into place: whoever sees the file reads all of it."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    os.replace(temp, path)


def with_callback(callback: L.Callback) -> None:
    make_trainer = relvit.training.run.make_trainer
    relvit.training.run.make_trainer = lambda cfg, guards=(): make_trainer(cfg, [*guards, callback])


def pause_in_setup(pause: Pause) -> None:
    build = relvit.training.run.build

    def paused(*args, **kwargs):
        run = build(*args, **kwargs)
        pause()
        return run

    relvit.training.run.build = paused


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "mark-ranks" or (os.environ.get(MARK_RANKS) and "=" in mode):
        if mode == "mark-ranks":  # rank zero; the ranks it starts inherit the values
            os.environ[MARK_RANKS] = "\n".join(argv[1:4])
            argv = argv[4:]
        folder, step, rank = os.environ[MARK_RANKS].split("\n")
        with_callback(MarkRanks(folder, int(step), int(rank)))
        make_trainer = relvit.training.run.make_trainer

        def this_script_again(cfg, guards=()):
            # what Lightning runs in the ranks it starts (runpy has put train.py in sys.argv[0])
            sys.argv[0] = str(Path(__file__).resolve())
            return make_trainer(cfg, guards)

        relvit.training.run.make_trainer = this_script_again
        sys.argv = [str(TRAIN), *argv]
        try:
            runpy.run_path(str(TRAIN), run_name="__main__")
        except SystemExit as exit_:
            from relvit.runs.distributed import global_rank

            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            write_whole(Path(folder) / f"rank{global_rank()}.exit", str(code))
            raise
        return
    if mode == "kill-at-step":
        with_callback(KillAtStep(int(argv[1])))
        overrides = argv[2:]
    elif mode == "pause-in":
        phase, pause = argv[1], Pause(argv[2])
        if phase == "setup":
            pause_in_setup(pause)
        else:
            with_callback(PauseInTrainer(phase, pause))
        overrides = argv[3:]
    else:
        raise SystemExit(f"stop_points: unknown mode {mode!r}")
    sys.argv = [str(TRAIN), *overrides]
    runpy.run_path(str(TRAIN), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
