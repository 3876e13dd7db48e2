"""How checkpoints reach the disk: atomically, and with a resumed run's best checkpoint in its own dir."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import IO, Any, cast

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from relvit.guards import TrainingDiverged, non_finite
from relvit.run_files import atomic_write

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temp file in its own directory, flushes it and renames it into
    place: a kill or a full disk mid-save leaves the previous file intact, and a failed save raises
    SaveError naming the file (Lightning's default stages the file in the system temp dir and moves it,
    which copies, and so truncates, across file systems)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        bad = non_finite(checkpoint.get("state_dict", {}))
        if bad:  # the last good checkpoint must never be replaced by broken weights
            raise TrainingDiverged(f"refusing to save {path}: non-finite weights in {', '.join(bad)}")
        atomic_write(path, lambda f: save_reporting_os_errors(checkpoint, f))


class _RecordingWriter:
    """A file's ``write`` that keeps the first OSError it raised: torch's zip writer swallows it and
    reports only a position mismatch (``unexpected pos``)."""

    def __init__(self, file: Any):
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.file.flush()


def save_reporting_os_errors(checkpoint: dict[str, Any], file: Any) -> None:
    """``torch.save`` into ``file``; a failed write (a full disk) raises its own OSError."""
    writer = _RecordingWriter(file)
    try:
        torch.save(checkpoint, cast(IO[bytes], writer))  # torch needs only write and flush
    except RuntimeError:
        if writer.error is not None:
            raise writer.error from None
        raise


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose best checkpoint holds weights and config only (``last.ckpt`` keeps the
    optimiser and everything else a resume needs), for runs that may resume into a new directory.

    Lightning forgets the best score when the checkpoint dir changed, so a resumed run would call its
    first new epoch the best. Here the interrupted run's best checkpoint is copied into the new dir and
    its score kept, so the best of the whole run is chosen and ``metrics.json`` points into the run's
    own directory.
    """

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        # only last.ckpt needs what resuming needs (optimiser, schedule, random state); the best
        # checkpoint, for evaluation and fine-tuning, holds the weights and the run config
        if Path(filepath).stem != self.CHECKPOINT_NAME_LAST and not self.save_weights_only:
            self.save_weights_only = True
            try:
                super()._save_checkpoint(trainer, filepath)
            finally:
                self.save_weights_only = False
        else:
            super()._save_checkpoint(trainer, filepath)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # Lightning refreshes last.ckpt only in epochs that also saved a best checkpoint; a resume
        # must find the latest epoch there, so it is saved every epoch
        if self.save_last and not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.fast_dev_run:  # Lightning's own would save last.ckpt of a debug run
            super().on_train_end(trainer, pl_module)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir = state_dict.get("dirpath")
        old_best = state_dict.get("best_model_path") or ""
        if old_dir is None or self.dirpath is None or Path(old_dir) == Path(self.dirpath):
            super().load_state_dict(state_dict)
            return
        self.best_model_score = None
        self.best_model_path = ""
        if old_best and Path(old_best).is_file():
            new_best = Path(self.dirpath) / Path(old_best).name
            atomic_write(new_best, lambda f: f.write(Path(old_best).read_bytes()))
            self.best_model_score = state_dict["best_model_score"]
            self.best_model_path = str(new_best)
            self.best_k_models = {str(new_best): self.best_model_score}
            self.kth_best_model_path = str(new_best)
            self.kth_value = self.best_model_score
            log.info("resume: best checkpoint so far (%s %s) copied from %s", self.monitor, float(self.best_model_score), old_best)
        elif old_best:
            log.warning("resume: the best checkpoint %s of the interrupted run is gone; the best is chosen among the new epochs", old_best)

