"""Configs read from files (checkpoints) are data, not code: only this project's own targets are built.

Hydra's ``instantiate`` imports and calls whatever a ``_target_`` names, so a config stored in a
checkpoint could call ``torch.save``, ``os.system`` or ``torch.load(weights_only=False)``. Before such
a config is built, every node is checked against the targets that this project's ``conf/`` tree uses,
its interpolations may call only resolvers that read nothing but the config, and the groups that
decide where a run writes (loggers, callbacks) are taken from ``conf/``, not from the file.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf, grammar_parser
from omegaconf.errors import GrammarParseError
from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

from relvit.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
#: Hydra's instantiation keys that this project's configs never use: each could smuggle in a call.
FORBIDDEN_KEYS = ("_args_",)
#: The resolvers a stored config may call: they read only the config and the registry (``oc.env``,
#: ``now``, ``hydra`` and the like read the environment, the clock or the process, and are refused).
PURE_RESOLVERS = ("oc.select", "oc.decode", "oc.create", "oc.dict.keys", "oc.dict.values", "backbone_size",
                  "relvit_precision")


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


def check_resolvers(config: Any, source: str) -> None:
    """Raise UntrustedConfigError naming the node of the first interpolation in ``config`` (plain,
    unresolved containers) that calls a resolver outside ``PURE_RESOLVERS``, or one named by an
    interpolation (which could become any of them)."""
    def visit(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{where}[{i}]")
        elif isinstance(node, str) and "${" in node:
            called = _resolvers_called(node)
            bad = next((name for name in called if name not in PURE_RESOLVERS), None)
            if bad is not None:
                raise UntrustedConfigError(
                    f"{source}: node {where} = {node!r} calls the resolver {bad!r}; a stored config may call only "
                    f"{', '.join(PURE_RESOLVERS)} (it must not read the environment or the clock). Set {where} on the "
                    "command line instead")

    visit(config, "")


def _resolvers_called(text: str) -> list[str]:
    """The resolvers an OmegaConf string calls, ``?`` for a name that is itself an interpolation."""
    try:
        tree = grammar_parser.parse(text)
    except GrammarParseError:
        return ["?"]  # not a valid interpolation: it would fail to resolve, so it is not read either
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, OmegaConfGrammarParser.ResolverNameContext):
            dynamic = any(isinstance(c, OmegaConfGrammarParser.InterpolationContext) for c in node.getChildren())
            found.append("?" if dynamic else node.getText())
        stack += list(node.getChildren()) if hasattr(node, "getChildren") else []
    return found


@functools.lru_cache(maxsize=None)
def project_entries(group: str) -> dict[str, Any]:
    """Every entry that conf/<group>/*.yaml defines, by name, as written there (unresolved)."""
    found: dict[str, Any] = {}
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        found.update({k: v for k, v in cast(dict[str, Any], node or {}).items() if k != "defaults"})
    return found


def entries_from_project(saved: Any, group: str, source: str) -> dict[str, Any] | None:
    """The entries of ``group`` that a stored config names, each as this project's conf/ writes it:
    the file chooses which of them run, never what they are, so none can write elsewhere."""
    if saved is None:
        return None
    known = project_entries(group)
    unknown = [str(name) for name in saved if name not in known]
    if unknown:
        raise UntrustedConfigError(f"{source}: {group}.{unknown[0]} is not one of the {group} of this project's "
                                   f"conf/{group}/ ({', '.join(sorted(known))}); a stored config cannot add one")
    return {name: known[name] for name in saved}
