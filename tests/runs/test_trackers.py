"""Trackers (W&B offline, MLflow's local store), several loggers at once, the missing-package
message, the progress bar and the config tree."""
import json
import struct
import sys
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import open_dict

import relvit.runs.trackers
from relvit.config.checks import check_config
from relvit.errors import ConfigError
from relvit.runs.console import ProgressLines, print_config, progress_bar
from relvit.training.run import train

from conftest import compose_config


def wandb_records(path: Path):
    """The protobuf records of a .wandb file (LevelDB log format: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if room >= 7 else (0, 0, 0)
        if room < 7 or (length == 0 and kind == 0):  # the zero padding at a block's end
            pos += room
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_wandb_run(run_dir: Path) -> dict:
    (found,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    out = {"history": {}, "config": {}, "images": sorted(str(p.relative_to(found.parent / "files/media/images"))
                                                                  for p in found.parent.glob("files/media/images/**/*.png"))}
    for record in wandb_records(found):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(project=record.run.project, name=record.run.display_name, group=record.run.run_group,
                       tags=list(record.run.tags))
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            step = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
            for key, value in step.items():
                out["history"].setdefault(key, []).append(value)
    return out


def test_wandb_offline_and_mlflow_record_a_run(tiny_cfg, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="needs pip install -e '.[trackers]'")
    pytest.importorskip("mlflow", reason="needs pip install -e '.[trackers]'")
    # no API key anywhere: W&B must go offline by itself, without asking the network
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(relvit.runs.trackers, "reachable", lambda *a, **k: pytest.fail("asked the network without a key"))
    cfg = tiny_cfg("logger=[tensorboard,wandb,mlflow]")
    assert list(cfg.logger) == ["tensorboard", "wandb", "mlflow"]
    summary = train(cfg)
    run_dir = Path(summary["output_dir"])

    wandb_run = read_wandb_run(run_dir)
    assert (wandb_run["project"], wandb_run["name"], wandb_run["group"]) == ("relvit", run_dir.name, "upstream")
    assert wandb_run["tags"] == ["relvit", "upstream", "digits"]
    assert wandb_run["config"]["dataset"]["name"] == "digits" and wandb_run["config"]["backbone"]["embed_dim"] == 36
    # the last validation logged is the best checkpoint's evaluation, as metrics.json has it
    assert float(wandb_run["history"]["val/loss"][-1]) == pytest.approx(summary["val"]["val/loss"])
    # the patch filters picture (upstream adds no position embeddings, so only this one)
    assert [name.split("_")[:2] for name in wandb_run["images"]] == [["embeddings/patch", "filters"]]
    assert len(wandb_run["history"]["embeddings/patch_filters/_type"]) == 1  # drawn once: it did not change

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("relvit").experiment_id])
    assert run.info.run_name == run_dir.name and run.data.tags["dataset"] == "digits"
    assert run.data.params["dataset/name"] == "digits" and run.data.params["backbone/embed_dim"] == "36"
    assert run.data.metrics["val/loss"] == pytest.approx(summary["val"]["val/loss"])
    pictures = [a.path for a in client.list_artifacts(run.info.run_id, "embeddings/patch_filters")]
    assert pictures and all(p.endswith(".png") for p in pictures)


def test_many_composes_every_logger(tmp_path):
    cfg = compose_config(tmp_path, ["logger=many"])
    assert list(cfg.logger) == ["tensorboard", "csv", "wandb", "mlflow"]


def test_wandb_goes_online_only_with_a_key_and_the_service(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert relvit.runs.trackers.wandb_offline()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(relvit.runs.trackers, "reachable", lambda *a, **k: False)
    assert relvit.runs.trackers.wandb_offline()
    monkeypatch.setattr(relvit.runs.trackers, "reachable", lambda *a, **k: True)
    assert not relvit.runs.trackers.wandb_offline()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert relvit.runs.trackers.wandb_offline()


@pytest.mark.parametrize("name,package", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_tracker_package_is_named_before_any_work(tiny_cfg, monkeypatch, name, package):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == package else real(n, *a))
    cfg = tiny_cfg(f"logger={name}")
    with pytest.raises(ConfigError, match=rf"logger={name} .*pip install -e '\.\[{package}\]'"):
        check_config(cfg)
    assert not Path(cfg.paths.output_dir).exists()


def test_progress_bar_only_on_a_terminal(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("progress_bar=rich", "trainer.enable_progress_bar=true")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    shown, callbacks = progress_bar(cfg)
    assert not shown and [type(c) for c in callbacks] == [ProgressLines]  # lines instead (tests/runs/test_console.py)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    shown, callbacks = progress_bar(cfg)
    assert shown and [type(c) for c in callbacks] == [RichProgressBar]
    assert progress_bar(tiny_cfg("progress_bar=tqdm", "trainer.enable_progress_bar=true")) == (True, [])
    assert progress_bar(tiny_cfg("progress_bar=none", "trainer.enable_progress_bar=true")) == (False, [])
    assert progress_bar(tiny_cfg("progress_bar=rich", "trainer.enable_progress_bar=false")) == (False, [])
    with pytest.raises(ConfigError, match="progress_bar='fancy' is invalid: one of rich, tqdm, none"):
        check_config(tiny_cfg("progress_bar=fancy"))


def test_config_tree_is_printed_when_asked(tiny_cfg, capsys):
    cfg = tiny_cfg("print_config=true")
    print_config(cfg)
    out = capsys.readouterr().out
    assert out.startswith("config") and "dataset" in out and "name: digits" in out and "embed_dim: 36" in out
    with open_dict(cfg):
        cfg.print_config = False
    print_config(cfg)
    assert capsys.readouterr().out == ""
