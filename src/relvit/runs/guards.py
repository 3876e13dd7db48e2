"""Callbacks that keep a run's results true: finite losses, clean stops on signals, resumable randomness."""
from __future__ import annotations

import logging
import random
import signal
import threading
from typing import Any, cast

import lightning as L
import numpy as np
import torch

from relvit.errors import RunFailed

log = logging.getLogger(__name__)

#: What cluster schedulers and terminals send to stop a job: each saves a checkpoint and stops the run.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class TrainingDiverged(RunFailed):
    """A loss became NaN or infinite; nothing after that step is saved."""


class RunInterrupted(RuntimeError):
    """A stop signal arrived; ``checkpoint`` (or None, before training started) holds the state it left."""

    def __init__(self, signum: int, checkpoint: str | None, where: str):
        self.signum = signum
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        saved = f"checkpoint of the current step: {checkpoint}" if checkpoint else "nothing was trained yet, nothing saved"
        super().__init__(f"stopped by {name} {where}; {saved}")


class StopRequest:
    """While entered, SIGTERM, SIGUSR1 and SIGINT only record that a stop was asked for; the run stops
    at the next step boundary (see SaveOnSignal). A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signum is not None:
            raise KeyboardInterrupt
        if self.signum is None:
            log.warning("received %s: stopping after the current step", signal.Signals(signum).name)
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def raise_if_asked(self, where: str, checkpoint: str | None = None) -> None:
        if self.signum is not None:
            raise RunInterrupted(self.signum, checkpoint, where)


class SaveOnSignal(L.Callback):
    """When a stop was asked for, saves ``last.ckpt`` at the end of the current training step (or at
    the start of the next epoch, after a signal during validation or during an epoch's last step) and
    raises RunInterrupted.

    Never on an epoch's last step: a run resumed from there skips that epoch's end (its validation,
    which fits the online probe and empties its bank), which the uninterrupted run went through."""

    def __init__(self, request: StopRequest, checkpoint_path: str):
        self.request = request
        self.checkpoint_path = checkpoint_path

    def _stop(self, trainer: L.Trainer) -> None:
        if self.request.signum is None:
            return
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
        self.request.raise_if_asked(f"at epoch {trainer.current_epoch}, step {trainer.global_step}", self.checkpoint_path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 < trainer.num_training_batches:
            self._stop(trainer)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._stop(trainer)

    def on_train_start(self, trainer, pl_module) -> None:
        _lightning_sigterm_without_exit(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        _lightning_sigterm_without_exit(trainer)

    def on_test_start(self, trainer, pl_module) -> None:
        _lightning_sigterm_without_exit(trainer)


def _lightning_sigterm_without_exit(trainer: L.Trainer) -> None:
    """Lightning's SIGTERM handler (installed as each fit, validate or test starts, ours inside it)
    forwards the signal to the ranks it started, and sets a flag on which its loops raise SystemExit
    with code 0 at the next batch: in a validation, the run ended with exit 0 and nothing saved. The
    flag is cleared after each signal, so that SaveOnSignal decides where the run stops."""
    if threading.current_thread() is not threading.main_thread():  # where Lightning installs none
        return
    current = signal.getsignal(signal.SIGTERM)
    if not callable(current) or getattr(current, "clears_lightning_flag", False):
        return
    lightning_handler = current

    def handler(signum: int, frame: Any) -> None:
        lightning_handler(signum, frame)
        trainer._signal_connector.received_sigterm = False

    handler.clears_lightning_flag = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, handler)


class FiniteLoss(L.Callback):
    """Stops training at the first step whose loss is NaN or infinite, naming the step and the loss
    terms that are, so that the last good checkpoint stays.

    On a GPU the check runs on the device and is read back every ``sync_every`` steps and before every
    validation and save (no host synchronisation per step); on the CPU it is read every step.
    """

    def __init__(self, sync_every: int = 50):
        self.sync_every = sync_every
        self.first_bad: torch.Tensor | None = None  # the first non-finite step, -1 while none

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach()
        if self.first_bad is None or self.first_bad.device != loss.device:
            self.first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss).all()
        self.first_bad = torch.where(bad & (self.first_bad < 0), trainer.global_step, self.first_bad)
        if loss.device.type == "cpu" or trainer.global_step % self.sync_every == 0:
            self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        if self.first_bad is None:
            return
        step = int(self.first_bad)
        if step < 0:
            return
        terms = sorted({
            k.removesuffix("_step") for k, v in trainer.callback_metrics.items()
            if k.startswith("train/") and "loss" in k and not k.endswith("_epoch") and not torch.isfinite(v).all()
        })
        diverged(trainer, f"loss at step {step}", terms or ["train/loss"])

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.training or trainer.state.fn == "fit":
            self.check(trainer)
            # a step whose loss was finite can still leave non-finite weights (its update overflowed):
            # validating them would only log NaN and draw pictures of it
            bad = non_finite(pl_module.state_dict())
            if bad:
                diverged(trainer, f"weights after step {trainer.global_step}", bad)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            bad = sorted(k for k, v in trainer.callback_metrics.items()
                         if k.startswith("val/") and "loss" in k and not torch.isfinite(v).all())
            if bad:  # before the checkpoint callbacks, which Lightning runs last, judge a NaN score
                diverged(trainer, f"validation loss after step {trainer.global_step}", bad)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self.check(trainer)  # (the weights themselves are checked by AtomicCheckpointIO, for every save)


def non_finite(tensors: dict[str, Any], limit: int = 5) -> list[str]:
    """Names of the floating-point tensors among ``tensors`` holding a NaN or an infinity (the first
    ``limit``, then "..." when there are more)."""
    bad = [k for k, v in tensors.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
    return bad[:limit] + (["..."] if len(bad) > limit else [])


def diverged(trainer: L.Trainer, what: str, names: list[str]) -> None:
    """Raise TrainingDiverged: the non-finite ``what`` (e.g. "loss at step 12"), naming ``names``."""
    last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none saved yet"
    raise TrainingDiverged(
        f"non-finite {what} (epoch {trainer.current_epoch}): {', '.join(names)} not finite; training stopped. "
        f"Last good checkpoint: {last}. Lower optimizer.lr or check the data."
    )


class RandomState(L.Callback):
    """Saves every random stream (Python, NumPy, torch CPU and CUDA) in each checkpoint and restores
    them on resume, so that the augmentations, dropout and data order of a resumed run repeat those of
    the uninterrupted run."""

    def state_dict(self) -> dict[str, Any]:
        state = {
            "python": random.getstate(),
            "numpy": _numpy_state_as_tensors(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(_as_python_state(state_dict["python"]))
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def _numpy_state_as_tensors() -> tuple:
    # weights-only loading reads tensors, not NumPy arrays
    kind, keys, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    return kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)


def _as_python_state(state: Any) -> tuple:
    # weights-only loading gives lists back where random.getstate() had tuples
    version, internal, gauss = state
    return version, tuple(internal), gauss


class EpochCounters(L.Callback):
    """Mends two of Lightning's (2.6) loop counters as a resumed run starts, so that a run resumed from a
    checkpoint saved at an epoch's edge counts, and stops in, the next epoch as the uninterrupted run does.

    - Saved on an epoch's last step (or at its end-of-epoch validation): Lightning closes that epoch on
      resume but still counts the next one as resumed mid-way, so it neither marks it started nor calls
      its ``on_train_epoch_start`` hooks; a checkpoint saved later in that epoch then read as an epoch
      boundary, and the resume after it replayed the epoch from its first batch.
    - Saved as an epoch started (a stop asked for during the previous epoch's validation): the batch
      counters still held the ended epoch's, so the resumed epoch ended before its first batch.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fit = trainer.fit_loop
        total: Any = fit.epoch_progress.total  # a _ProcessedTracker (typed as its base)
        if (fit.restarted_mid_epoch or fit.restarted_on_epoch_end) and total.processed == total.started == total.completed:
            fit.reset_restart_stage()
        elif fit.restarted_on_epoch_start:
            fit.epoch_loop.batch_progress.reset_on_run()

