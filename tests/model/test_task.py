"""The task group: configs that inherit, and a schema that refuses keys it does not have."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from relvit.errors import ConfigError
from relvit.model.task import TaskSpec, check_task_overrides, task_keys

from conftest import compose_config


def _task(tmp_path, name, *overrides):
    return OmegaConf.to_container(compose_config(tmp_path, [f"task={name}", *overrides]).task)


@pytest.mark.parametrize("child, parent, differs", [
    ("megapatch", "upstream", {"name", "megapatch"}),
    ("joint", "downstream", {"name", "relations", "positions"}),
])
def test_task_configs_inherit_and_state_only_what_differs(tmp_path, child, parent, differs):
    a, b = _task(tmp_path, child), _task(tmp_path, parent)
    assert list(a) == list(b)  # the same keys, in the same order
    assert {k for k in a if a[k] != b[k]} == differs


def test_a_change_to_upstream_reaches_megapatch(tmp_path):
    # what a defaults list gives: a value set once in upstream.yaml holds in megapatch
    assert _task(tmp_path, "megapatch")["patch_augment"] == _task(tmp_path, "upstream")["patch_augment"]


def test_every_task_key_of_every_config_is_known(tmp_path):
    for name in ("upstream", "downstream", "joint", "megapatch"):
        assert set(_task(tmp_path, name)) == set(task_keys())


def test_an_unknown_key_in_the_task_node_names_the_valid_ones(tmp_path):
    node = {**OmegaConf.to_container(compose_config(tmp_path, ["task=upstream"]).task, resolve=True), "relatons": True}
    with pytest.raises(ConfigError, match=r"task\.relatons is not a key of the task group; valid keys: name, supervised, relations"):
        TaskSpec.from_config(node)


@pytest.mark.parametrize("arg", ["task.relatons=true", "+task.relatons=true", "++task.relatons=1", "~task.relatons"])
def test_an_unknown_task_key_on_the_command_line_is_refused(arg):
    with pytest.raises(ConfigError, match="task.relatons is not a key"):
        check_task_overrides(["backbone=vit_tiny", arg])


def test_known_task_keys_and_group_choices_pass():
    check_task_overrides(["task=megapatch", "task.megapatch.side=4", "+task.online_probe=true", "~task.patch_augment"])
