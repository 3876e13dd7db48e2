"""Runs train.py with a stop signal at a chosen point, for the fault tests (no timing, no race).

``python tests/stop_points.py kill-at-step N <train.py overrides>``: the run sends itself SIGTERM at
the start of global step N (a pre-emption at a known step).
``python tests/stop_points.py pause-in PHASE MARKER <overrides>``: when the run reaches PHASE (setup,
fit, validation, test) it writes MARKER and waits there until a stop signal has arrived, which the
test sends once it sees MARKER. It exits 99 if none comes within a few minutes.
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
