"""Checkpoints written before the package was grouped into packages name the old module paths in their
stored config's ``_target_`` strings; they still resume, evaluate and fine-tune from, through the one
table of moved modules (relvit.runs.saved_config.MOVED_MODULES)."""
from __future__ import annotations

import json

import torch

import relvit.runs.saved_config
from relvit.runs.checkpoints import read_checkpoint
from relvit.runs.saved_config import MOVED_MODULES

from conftest import TINY


def with_old_targets(node):
    """``node`` with each ``_target_`` named by the module path it had before the move."""
    if isinstance(node, list):
        return [with_old_targets(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: with_old_targets(v) for k, v in node.items()}
    target = node.get("_target_")
    if isinstance(target, str):
        old = next((o for o, n in MOVED_MODULES.items() if target.startswith(f"{n}.")), None)
        if old is not None:
            node["_target_"] = old + target[len(MOVED_MODULES[old]):]
    return node


def targets(node) -> list[str]:
    text = json.dumps(node, default=str)
    return sorted(set(part.split('"')[0] for part in text.split('"_target_": "')[1:]))


def old_checkpoint(path, into):
    content = read_checkpoint(path)
    content["relvit_config"] = with_old_targets(content["relvit_config"])
    torch.save(content, into)
    return content["relvit_config"]


def test_a_checkpoint_with_the_old_module_paths_resumes_evaluates_and_fine_tunes(cli, tmp_path, monkeypatch):
    code, _, err = cli("train.py", *TINY, "task=upstream", f"hydra.run.dir={tmp_path / 'a'}")
    assert code == 0, err[-2000:]
    checkpoints = tmp_path / "a" / "checkpoints"
    saved = old_checkpoint(checkpoints / "last.ckpt", checkpoints / "old_last.ckpt")
    old_checkpoint(checkpoints / "best.ckpt", checkpoints / "old_best.ckpt")
    written = targets(saved)
    # the stored config names the modules as the code before the move did
    assert {"relvit.schedules.warmup_cosine", "relvit.checkpoint_io.RunCheckpoint", "relvit.callbacks.EmbeddingImages",
            "relvit.probes.knn_monitor.KNNMonitor"} <= set(written), written

    code, _, err = cli("train.py", f"resume={checkpoints / 'old_last.ckpt'}", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'b'}")
    assert code == 0, err[-2000:]
    assert read_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["epoch"] == 1
    resumed = read_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["relvit_config"]
    assert "relvit.model.schedules.warmup_cosine" in targets(resumed)  # written on with the new paths

    code, out, err = cli("evaluate.py", f"ckpt_path={checkpoints / 'old_best.ckpt'}", f"hydra.run.dir={tmp_path / 'c'}")
    assert code == 0, err[-2000:]
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())

    code, _, err = cli("train.py", *TINY, "task=downstream", f"pretrained={checkpoints / 'old_best.ckpt'}",
                       f"hydra.run.dir={tmp_path / 'd'}")
    assert code == 0, err[-2000:]

    # without the table, the old paths are targets outside this project's configs, and refused
    monkeypatch.setattr(relvit.runs.saved_config, "MOVED_MODULES", {})
    code, _, err = cli("evaluate.py", f"ckpt_path={checkpoints / 'old_best.ckpt'}", f"hydra.run.dir={tmp_path / 'e'}")
    assert code == 2 and "relvit.schedules.warmup_cosine" in err and "not one of this project's" in err, err[-2000:]
