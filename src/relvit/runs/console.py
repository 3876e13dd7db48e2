"""What a run shows on its terminal: the composed config as a tree at start, and the progress bar
(``progress_bar: rich | tqdm | none``), which stays off when the output is not a terminal; there
(clusters, ``nohup``, a file) a progress line per epoch and at least every minute takes its place."""
from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta
from typing import Any, Callable

import lightning as L
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table
from omegaconf import DictConfig, OmegaConf

PROGRESS_BARS = ("rich", "tqdm", "none")


def progress_bar(cfg: DictConfig) -> tuple[bool, list[L.Callback]]:
    """``(enable_progress_bar, callbacks)`` for the Trainer: a bar only where someone watches, since
    redirected to a file it is a flood of lines (the rich one as a callback); elsewhere ProgressLines."""
    bar = cfg.get("progress_bar", "tqdm")
    wanted = bar != "none" and bool(cfg.trainer.get("enable_progress_bar", True))
    if wanted and not sys.stderr.isatty():
        return False, [ProgressLines()]
    if wanted and bar == "rich":
        from lightning.pytorch.callbacks import RichProgressBar

        return True, [RichProgressBar(leave=True)]
    return wanted, []


def model_summary(cfg: DictConfig) -> list[L.Callback]:
    """The layer table at the start of a fit (``trainer.enable_model_summary``), without FLOPs."""
    return [LayerTable()] if cfg.trainer.get("enable_model_summary", True) else []


class LayerTable(ModelSummary):
    """Lightning's model summary without its FLOPs column and total: Lightning counts them on an
    ``example_input_array``, which this module has not (what it takes depends on the task), and so
    printed ``0`` for every layer."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int, **kwargs: Any) -> None:
        columns = [(name, cells) for name, cells in summary_data if name != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes, 0, *columns)
        lines = table.splitlines()
        logging.getLogger(ModelSummary.__module__).info("\n" + "\n".join(line for line in lines if not line.endswith("Total Flops")))


class ProgressLines(L.Callback):
    """One line at the end of every training epoch and at least every ``every_s`` seconds within one,
    on rank zero: ``epoch 2/100  step 340/17000  images/s 812  ETA 1:02:03``. Images per second count
    every rank's training images since the last line, over the time spent training; the ETA spreads the time since the fit started
    (validation included) over the steps still to come."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.every_s, self.clock = every_s, clock
        self.start = self.last = self.paused = 0.0
        self.first_step = self.images = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = self.last = self.clock()
        self.first_step, self.images = trainer.global_step, 0  # a resumed run starts mid-way

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        self.images += len(images) * trainer.world_size
        if self.clock() - self.last >= self.every_s:
            self.report(trainer)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.paused = self.clock()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.last += self.clock() - self.paused  # images/s are those of training

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.report(trainer)

    def report(self, trainer: L.Trainer) -> None:
        now = self.clock()
        if trainer.is_global_zero:
            print(progress_line(trainer.current_epoch + 1, trainer.max_epochs, trainer.global_step,
                                trainer.estimated_stepping_batches, self.images / max(now - self.last, 1e-9),
                                (now - self.start) / max(trainer.global_step - self.first_step, 1)), flush=True)
        self.last, self.images = now, 0


def progress_line(epoch: int, epochs: int | None, step: int, steps: float, images_per_s: float, s_per_step: float) -> str:
    """``epoch 2/100  step 340/17000  images/s 812  ETA 1:02:03`` (no total where a run has none)."""
    total_epochs = f"/{epochs}" if epochs and epochs > 0 else ""
    if steps == float("inf"):
        return f"epoch {epoch}{total_epochs}  step {step}  images/s {images_per_s:.0f}"
    eta = timedelta(seconds=round(max(int(steps) - step, 0) * s_per_step))
    return f"epoch {epoch}{total_epochs}  step {step}/{int(steps)}  images/s {images_per_s:.0f}  ETA {eta}"


def config_tree(cfg: DictConfig) -> Any:
    """The resolved config as a ``rich.tree.Tree``: one branch per group, its YAML beneath."""
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    leaves = {k: v for k, v in resolved.items() if not isinstance(v, dict)}
    if leaves:
        tree.add("(top level)").add(Syntax(OmegaConf.to_yaml(leaves), "yaml", background_color="default"))
    for key, value in resolved.items():
        if isinstance(value, dict):
            tree.add(str(key)).add(Syntax(OmegaConf.to_yaml(value), "yaml", background_color="default"))
    return tree


def print_config(cfg: DictConfig) -> None:
    """Print the config tree to stdout when ``print_config`` is true (colours only on a terminal)."""
    if cfg.get("print_config", False):
        from rich.console import Console

        Console(soft_wrap=True).print(config_tree(cfg))
