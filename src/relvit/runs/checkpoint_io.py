"""How checkpoints reach the disk: atomically, and with a resumed run's best checkpoint in its own dir."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import IO, Any, cast

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from relvit.errors import UserError
from relvit.runs.checkpoints import read_checkpoint
from relvit.runs.files import atomic_write
from relvit.runs.guards import TrainingDiverged, non_finite

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

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._trainer = trainer  # its ckpt_path, the checkpoint being resumed, is set before load_state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        resumed = getattr(getattr(self, "_trainer", None), "ckpt_path", None)
        score = state_dict.get("best_model_score")
        best = own_best(state_dict.get("best_model_path") or "", resumed) if isinstance(score, (torch.Tensor, float)) else None
        score = torch.as_tensor(score) if best else None
        old_dir = state_dict.get("dirpath")
        if old_dir is None or self.dirpath is None or Path(old_dir) == Path(self.dirpath):
            # the callback state's paths are the file's word: only the vetted best one is kept
            kept = "" if best is None else str(best)
            super().load_state_dict({**state_dict, "best_model_path": kept, "kth_best_model_path": kept,
                                     "best_k_models": {kept: score} if best else {}, "best_model_score": score,
                                     "last_model_path": ""})
            return
        self.best_model_score = None
        self.best_model_path = ""
        if best is not None and score is not None:
            new_best = Path(self.dirpath) / best.name
            atomic_write(new_best, lambda f: f.write(best.read_bytes()))
            self.best_model_score = score
            self.best_model_path = str(new_best)
            self.best_k_models = {str(new_best): score}
            self.kth_best_model_path = str(new_best)
            self.kth_value = score
            log.info("resume: best checkpoint so far (%s %s) copied from %s", self.monitor, float(score), best)


def own_best(path: str, resumed: Any) -> Path | None:
    """The best checkpoint a resumed checkpoint's callback state names, if it is a checkpoint in the
    resumed one's own directory (and not last.ckpt); otherwise None, with a warning saying why."""
    if not path:
        return None
    candidate = Path(path).resolve()  # a link out of the directory is judged by where it leads
    home = Path(str(resumed)).resolve().parent if resumed else None
    why = None
    if home is None or candidate.parent != home:
        why = f"it is not in {home}, the directory of the checkpoint being resumed"
    elif candidate.suffix != ".ckpt" or candidate.stem == ModelCheckpoint.CHECKPOINT_NAME_LAST or not candidate.is_file():
        why = "it is not a best checkpoint (a .ckpt file other than last.ckpt)"
    else:
        try:
            if "state_dict" not in read_checkpoint(candidate):
                why = "it holds no state_dict"
        except UserError as err:
            why = str(err)
    if why is not None:
        log.warning("resume: the best checkpoint %s of the interrupted run is not used (%s); the best is chosen "
                    "among the new epochs", path, why)
        return None
    return candidate
