"""Configs read from files (checkpoints) are data, not code: only this project's own targets are built.

Hydra's ``instantiate`` imports and calls whatever a ``_target_`` names, so a config stored in a
checkpoint could call ``torch.save``, ``os.system`` or ``torch.load(weights_only=False)``. Before such
a config is built, every node is checked against the targets that this project's ``conf/`` tree uses.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from relvit.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
#: Hydra's instantiation keys that this project's configs never use: each could smuggle in a call.
FORBIDDEN_KEYS = ("_args_",)


class UntrustedConfigError(UserError):
    """A config read from a file names a target outside this project's configs."""


@functools.lru_cache(maxsize=1)
def project_targets() -> frozenset[str]:
    """Every ``_target_`` named in conf/**/*.yaml."""
    found = set()
    for path in CONF_DIR.rglob("*.yaml"):
        found.update(re.findall(r"^\s*_target_:\s*([\w.]+)\s*$", path.read_text(), flags=re.MULTILINE))
    return frozenset(found)


def check_trusted(config: Any, source: str) -> None:
    """Raise UntrustedConfigError naming the node and target of the first ``_target_`` that is not
    one of this project's (``config``: resolved plain containers)."""
    allowed = project_targets()

    def visit(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key in FORBIDDEN_KEYS:
                if key in node:
                    raise UntrustedConfigError(f"{source}: node {where or '<root>'} uses {key}, which no config of this project uses; refusing to build it")
            target = node.get("_target_")
            if target is not None and target not in allowed:
                raise UntrustedConfigError(
                    f"{source}: node {where or '<root>'} names _target_ {target!r}, which is not one of this project's "
                    "configs' targets; refusing to build it (a config read from a file must not run other code)"
                )
            for key, value in node.items():
                visit(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{where}[{i}]")

    visit(config, "")


def trusted_resolved(cfg: DictConfig, source: str) -> DictConfig:
    """``cfg`` resolved (so interpolations such as ``oc.decode`` cannot produce a node after the check)
    and checked: the config that is safe to instantiate."""
    resolved = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    check_trusted(resolved, source)
    return OmegaConf.create(resolved)
