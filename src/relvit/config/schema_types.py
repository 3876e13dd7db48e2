"""The vocabulary of the config schema (``relvit.config.schema``): leaves with a type and a range,
nodes with fixed keys, and the one pass that checks a resolved config against them.

A key the schema does not declare is refused, naming the valid ones; a value outside its declared
type or range is refused with ``<key>=<value> is invalid: <what is valid>``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from relvit.errors import ConfigError


@dataclass(frozen=True)
class Value:
    """A leaf: ``ok(value)`` says whether the value fits, ``valid`` says what would."""

    valid: str
    ok: Callable[[Any], bool]


@dataclass(frozen=True)
class Node:
    """A node with fixed keys (a group, or a part of one); ``null``: the whole node may be null."""

    keys: Mapping[str, Spec]
    null: bool = False


@dataclass(frozen=True)
class ByTarget:
    """A node whose keys depend on its ``_target_`` (the backbone, a data source)."""

    options: Mapping[str, Mapping[str, Spec]]


@dataclass(frozen=True)
class MapOf:
    """A node of names the user chooses, each value of one spec (the comparison's label budgets)."""

    item: Spec


Spec = Union[Value, Node, ByTarget, MapOf]


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _nullable(rule: Value, null: bool) -> Value:
    return Value(f"null or {rule.valid}", lambda v: v is None or rule.ok(v)) if null else rule


def integer(lo: int | None = None, hi: int | None = None, null: bool = False) -> Value:
    valid = "an integer" + (f" from {lo} to {hi}" if hi is not None else f" >= {lo}" if lo is not None else "")
    return _nullable(Value(valid, lambda v: _int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)), null)


def number(lo: float, hi: float = math.inf, *, open_lo: bool = False, open_hi: bool = True, null: bool = False) -> Value:
    if hi == math.inf:
        valid = f"a number {'>' if open_lo else '>='} {lo:g}"
    else:
        valid = f"a number in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"

    def ok(v: Any) -> bool:
        return _num(v) and (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)

    return _nullable(Value(valid, ok), null)


def boolean(null: bool = False) -> Value:
    return _nullable(Value("true or false", lambda v: isinstance(v, bool)), null)


def choice(*values: Any, null: bool = False) -> Value:
    return _nullable(Value("one of " + ", ".join(dict.fromkeys(map(str, values))),
                           lambda v: not isinstance(v, bool) and v in values), null)


def text(null: bool = False) -> Value:
    return _nullable(Value("a string", lambda v: isinstance(v, str)), null)


def target(name: str) -> Value:
    return Value(name, lambda v: v == name)


def numbers(n: int, rule: Value) -> Value:
    return Value(f"{n} numbers, each {rule.valid}", lambda v: isinstance(v, list) and len(v) == n and all(map(rule.ok, v)))


def list_of(rule: Value, null: bool = False) -> Value:
    return _nullable(Value(f"a list, each {rule.valid}", lambda v: isinstance(v, list) and all(map(rule.ok, v))), null)


def overrides(null: bool = False) -> Value:
    return _nullable(Value("a list of overrides like [task=downstream, trainer.max_epochs=10]",
                           lambda v: isinstance(v, list) and all(isinstance(x, str) and "=" in x for x in v)), null)


def check_schema(config: Any, schema: Mapping[str, Spec]) -> None:
    """Raise ConfigError for the first key of ``config`` (resolved plain containers) that ``schema``
    does not declare, or whose value it does not allow."""
    _visit(config, Node(schema), "")


def _visit(value: Any, spec: Spec, key: str) -> None:
    if isinstance(spec, Value):
        if not spec.ok(value):
            raise ConfigError(f"{key}={value!r} is invalid: {spec.valid}")
        return
    if value is None and isinstance(spec, Node) and spec.null:
        return
    if not isinstance(value, dict):
        raise ConfigError(f"{key}={value!r} is invalid: a node of keys, as in conf/{key.split('.')[0]}/")
    if isinstance(spec, MapOf):
        for name, item in value.items():
            _visit(item, spec.item, f"{key}.{name}")
        return
    keys = spec.keys if isinstance(spec, Node) else _target_keys(value, spec, key)
    for name, item in value.items():
        where = f"{key}.{name}" if key else str(name)
        if name not in keys:
            owner = f"the {key} group" if key and "." not in key else key or "the config"
            raise ConfigError(f"{where} is not a key of {owner}; valid keys: {', '.join(keys)}")
        _visit(item, keys[name], where)


def _target_keys(value: dict[str, Any], spec: ByTarget, key: str) -> Mapping[str, Spec]:
    found = value.get("_target_")
    if not isinstance(found, str) or found not in spec.options:
        raise ConfigError(f"{key}._target_={found!r} is invalid: one of {', '.join(spec.options)}")
    return {"_target_": target(found), **spec.options[found]}
