"""What a training task asks of the model: which targets and heads, and how its runs are judged."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from relvit.errors import ConfigError
from relvit.model.heads import ClassifierHead

TASK_NAMES = ("upstream", "downstream", "joint", "megapatch")
MONITOR_MODES = ("min", "max")
CLASSIFIER_POOLS = ("auto", *ClassifierHead.POOLS)
#: Keys of the task node that configure other parts (built by the data module), not the TaskSpec.
OTHER_PARTS = ("megapatch", "patch_augment")


@dataclass(frozen=True)
class TaskSpec:
    """The ``task`` config group as a typed record (see conf/task/*.yaml for what each key means)."""

    name: str
    supervised: bool
    relations: bool
    positions: bool
    distances: bool = False
    angles: bool = False
    add_pos_embed: bool = True
    patch_shuffle: bool = False
    online_probe: bool = False
    probe_lr: float = 0.1
    probe_steps: int = 100
    relation_label_smoothing: float = 0.0
    relation_loss_dropout: float = 0.0
    relation_loss_dropout_needs_smoothing: bool = False
    cls_to_patches: bool = False
    freeze_backbone: bool = False
    decay_all_parameters: bool = False
    layer_decay: float | None = None
    classifier_pool: str = "auto"
    monitor: str = "val/loss"
    monitor_mode: str = "min"

    @classmethod
    def from_config(cls, cfg: Any) -> "TaskSpec":
        """Build from the ``task`` node; a key that is neither a field nor one of OTHER_PARTS is refused."""
        own = {f.name for f in fields(cls)}
        check_task_keys(dict(cfg))
        return cls(**{k: v for k, v in dict(cfg).items() if k in own})

    def __post_init__(self):
        # the type and range of each key are the schema's (relvit.config.schema); these rules tie keys together
        if not (self.supervised or self.relations or self.positions or self.distances or self.angles):
            raise ValueError(f"task {self.name!r} enables no loss: set one of supervised, relations, positions, distances, angles")
        if self.freeze_backbone and not self.supervised:
            raise ValueError("task.freeze_backbone=true trains nothing without a supervised head (set task.supervised=true)")


def task_keys() -> tuple[str, ...]:
    """Every key the task group may hold."""
    return (*(f.name for f in fields(TaskSpec)), *OTHER_PARTS)


def check_task_keys(keys: Iterable[str]) -> None:
    """Refuse a key the task group does not have (a misspelt key would otherwise be dropped)."""
    valid = task_keys()
    for key in keys:
        if key not in valid:
            raise ConfigError(f"task.{key} is not a key of the task group; valid keys: {', '.join(valid)}")


#: An override of a task key on the command line: task.<key>=..., +task.<key>=..., ~task.<key>
_TASK_OVERRIDE = re.compile(r"^(?:\+\+|\+|~)?task\.([^.=~]+)")


def check_task_overrides(args: Iterable[str]) -> None:
    """Check the task keys named on the command line before Hydra composes (its own message for a
    missing key does not list the valid ones)."""
    check_task_keys(m.group(1) for m in map(_TASK_OVERRIDE.match, args) if m)
