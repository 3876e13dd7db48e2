"""A run's config rebuilt from the one saved in its checkpoint, with the command line's overrides on top."""
from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from relvit.errors import ConfigError
from relvit.runs.trusted_config import check_resolvers, check_trusted, entries_from_project, project_targets

#: The groups that decide where a run writes: a stored config names their entries, conf/ defines them.
PROJECT_GROUPS = ("callbacks", "logger")
#: Where each module went when the package was grouped into packages (old path: new one), for the
#: ``_target_`` strings of configs stored by earlier checkpoints. The one place old paths are mapped.
MOVED_MODULES = {
    "relvit.callbacks": "relvit.evaluation.pictures",
    "relvit.checkpoint_io": "relvit.runs.checkpoint_io",
    "relvit.checkpoints": "relvit.runs.checkpoints",
    "relvit.comparison": "relvit.evaluation.comparison",
    "relvit.config_checks": "relvit.config.checks",
    "relvit.config_schema": "relvit.config.schema",
    "relvit.console": "relvit.runs.console",
    "relvit.distributed": "relvit.runs.distributed",
    "relvit.evaluation": "relvit.evaluation.evaluate",
    "relvit.export": "relvit.evaluation.export",
    "relvit.figures": "relvit.evaluation.figures",
    "relvit.guards": "relvit.runs.guards",
    "relvit.hardware": "relvit.model.hardware",
    "relvit.heads": "relvit.model.heads",
    "relvit.module": "relvit.model.module",
    "relvit.probes.report": "relvit.evaluation.report",
    "relvit.progress": "relvit.runs.progress",
    "relvit.run_files": "relvit.runs.files",
    "relvit.saved_config": "relvit.runs.saved_config",
    "relvit.schedules": "relvit.model.schedules",
    "relvit.schema_types": "relvit.config.schema_types",
    "relvit.ssl": "relvit.model.ssl",
    "relvit.summary": "relvit.evaluation.summary",
    "relvit.task": "relvit.model.task",
    "relvit.trackers": "relvit.runs.trackers",
    "relvit.training": "relvit.training.run",
    "relvit.trusted_config": "relvit.runs.trusted_config",
    "relvit.visualize": "relvit.evaluation.visualize",
    "relvit.weight_resampling": "relvit.runs.weight_resampling",
}


def saved_run_config(content: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    """The run config stored in a checkpoint's ``content``, checked to build only this project's targets."""
    saved = content.get("relvit_config")
    if not saved:
        raise ConfigError(f"{key}={path!r} is invalid: it holds no saved run config; pass a checkpoint written by train.py")
    if not isinstance(saved, dict):
        raise ConfigError(f"{key}={path!r} is invalid: its saved run config is a {type(saved).__name__}, not a config")
    saved = moved_targets(saved)
    check_trusted(saved, f"the config saved in {path}")
    return saved


def moved_targets(config: Any) -> Any:
    """``config`` (plain containers) with each ``_target_`` in a module that has moved since the
    checkpoint was written (``MOVED_MODULES``) named by its module's new path; the others as they are."""
    if isinstance(config, list):
        return [moved_targets(v) for v in config]
    if not isinstance(config, dict):
        return config
    moved = {k: moved_targets(v) for k, v in config.items()}
    target = moved.get("_target_")
    if isinstance(target, str) and target not in project_targets():
        module, _, name = target.rpartition(".")
        old = next((m for m in MOVED_MODULES if module == m or module.startswith(f"{m}.")), None)
        if old is not None:
            moved["_target_"] = f"{MOVED_MODULES[old]}{module[len(old):]}.{name}"
    return moved


def rebuild(saved: dict[str, Any], cfg: DictConfig, overrides: list[str], own_keys: tuple[str, ...] = (),
            source: str = "the saved config") -> DictConfig:
    """``saved`` with each key the user overrode now taken from ``cfg`` (whole groups such as
    ``dataset=...`` included), top-level keys added since the checkpoint was written taken from
    ``cfg``, and ``cfg``'s paths, so the run writes into its own directory.

    What ``saved`` says about writing is not used: its loggers and callbacks are rebuilt from conf/,
    the Trainer's root dir is the new run's, and a download happens only when this command line asks.
    Its interpolations may call only pure resolvers (``check_resolvers``)."""
    merged = OmegaConf.create(saved)
    for group in PROJECT_GROUPS:
        if group in merged:
            merged[group] = entries_from_project(saved[group], group, source)
    if "trainer" in merged and "trainer" in cfg:
        merged.trainer.default_root_dir = cfg.trainer.default_root_dir
    without_downloads(merged)
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    keys = [k for k in keys if k not in own_keys and not k.startswith("hydra")]
    _check_stored(merged, keys, source)
    for key in cfg:
        if key not in merged and key not in own_keys:
            merged[key] = cfg[key]
    for key in keys:
        OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    merged.paths = cfg.paths
    return merged


def without_downloads(config: DictConfig) -> None:
    """A stored config never turns a download on (it would write into a folder the file names);
    only a command line's ``dataset.download=true`` does."""
    if isinstance(config.get("dataset"), DictConfig):
        config.dataset.download = False
        if isinstance(config.dataset.get("source"), DictConfig) and "download" in config.dataset.source:
            config.dataset.source.download = "${dataset.download}"


def _check_stored(merged: DictConfig, replaced: list[str], source: str) -> None:
    """``check_resolvers`` on what the run takes from the stored config: not its paths, nor the keys
    this command line replaces."""
    stored = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(merged)))
    stored.pop("paths", None)
    for key in replaced:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(stored, parent, throw_on_resolution_failure=False) if parent else stored
        if isinstance(node, DictConfig):
            node.pop(leaf, None)
    check_resolvers(OmegaConf.to_container(stored), source)


def check_resolved(cfg: DictConfig, source: str) -> None:
    """Check the targets of ``cfg`` once more after interpolation (``oc.decode`` can make nodes)."""
    check_trusted(OmegaConf.to_container(cfg, resolve=True), source)


def resume_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The config of the run that wrote ``cfg.resume``, with this command line's overrides on top:
    a resumed run goes on as it was, whatever the command repeats of the original one.
    ``extend_to_epochs=N`` also sets ``trainer.max_epochs=N``."""
    from relvit.runs.checkpoints import read_checkpoint

    path = str(cfg.resume)
    if not Path(path).is_file():
        raise ConfigError(f"resume={path!r} is invalid: the path of an existing checkpoint written by train.py")
    if cfg.get("pretrained") is not None:
        raise ConfigError(f"pretrained={str(cfg.pretrained)!r} is invalid: null when resume is set (resuming restores all weights)")
    content = read_checkpoint(path)
    if "optimizer_states" not in content:
        raise ConfigError(f"resume={path!r} is invalid: it holds weights only (a best checkpoint), not the optimiser and "
                          f"training state a resume needs; resume from the run's last checkpoint, {Path(path).with_name('last.ckpt')}")
    merged = rebuild(saved_run_config(content, "resume", path), cfg, overrides, source=f"the config saved in {path}")
    merged.pretrained = None  # the resumed weights replace any warm start
    extend = cfg.get("extend_to_epochs")
    if extend is not None:
        done = int(content.get("epoch", -1)) + 1
        if not isinstance(extend, int) or isinstance(extend, bool) or extend <= done:
            raise ConfigError(f"extend_to_epochs={extend!r} is invalid: {path} has trained {done} epochs; give a larger number of epochs")
        merged.trainer.max_epochs = extend
    check_resolved(merged, f"the config saved in {path}")
    return merged
