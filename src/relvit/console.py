"""What a run shows on its terminal: the composed config as a tree at start, and the progress bar
(``progress_bar: rich | tqdm | none``), which stays off when the output is not a terminal."""
from __future__ import annotations

import sys
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

PROGRESS_BARS = ("rich", "tqdm", "none")


def progress_bar(cfg: DictConfig) -> tuple[bool, list[L.Callback]]:
    """``(enable_progress_bar, callbacks)`` for the Trainer: a bar only where someone watches, since
    redirected to a file it is a flood of lines; the rich one as a callback."""
    bar = cfg.get("progress_bar", "tqdm")
    shown = bar != "none" and bool(cfg.trainer.get("enable_progress_bar", True)) and sys.stderr.isatty()
    if shown and bar == "rich":
        from lightning.pytorch.callbacks import RichProgressBar

        return True, [RichProgressBar(leave=True)]
    return shown, []


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
