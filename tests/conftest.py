"""Shared fixtures: the real configs composed with Hydra's compose API and shrunk to tiny models."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# A ViT small enough to train in a second on a CPU: 36 wide (4 per relation head), 1 block.
TINY = [
    "backbone=vit_tiny",
    "backbone.depth=1",
    "backbone.embed_dim=36",
    "backbone.num_heads=3",
    "data.batch_size=64",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]

torch.set_num_threads(2)


def compose_config(tmp_path: Path, overrides: list[str] = (), config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as train.py would, writing into ``tmp_path``."""
    import relvit  # noqa: F401  (registers the resolvers the config uses, as train.py's import does)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name=config_name,
            overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", *overrides],
        )
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path):
    """compose(tmp_path-bound) for a tiny model: ``tiny_cfg("task=joint")``."""

    def make(*overrides: str, output: str = "run") -> DictConfig:
        cfg = compose_config(tmp_path, [*TINY, *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / output)
        return cfg

    return make


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run ``train.py`` or ``evaluate.py`` in this process, as from a shell in ``tmp_path``:
    ``code, out, err = cli("train.py", "optimizer.lr=abc")``."""
    import importlib.util
    import os
    import sys

    import relvit.cli

    def run(script: str, *args: str) -> tuple[int, str, str]:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", [str(REPO / script), *args])
        monkeypatch.setattr(relvit.cli, "_task_started", False)
        GlobalHydra.instance().clear()
        # run as __main__, as `python train.py` does: Hydra then finds conf/ beside the script
        spec = importlib.util.spec_from_file_location("__main__", REPO / script)
        module = importlib.util.module_from_spec(spec)
        capsys.readouterr()
        environ = dict(os.environ)  # a run's job hand-over variables must not reach later subprocesses
        try:
            spec.loader.exec_module(module)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            GlobalHydra.instance().clear()
            os.environ.clear()
            os.environ.update(environ)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a train.py / evaluate.py subprocess: this checkout's package first, so
    the test runs the code under test whether or not the package is installed from elsewhere."""
    import os

    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    return env


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped, with the reason, on a machine without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def write_image(path: Path, size: int | tuple[int, int], colour=(200, 40, 90), mode: str = "RGB") -> Path:
    """A one-colour image file (the dataset sources' fixtures)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (size, size) if isinstance(size, int) else size
    fill = colour if mode == "RGB" else colour[0]
    Image.new(mode, size, fill).save(path)
    return path


def write_hollow_png(path: Path, width: int, height: int, rows: int) -> str:
    """A grey PNG whose header says ``width`` x ``height`` but whose data holds only ``rows`` rows."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    data = b"".join(b"\x00" + b"\x80" * width for _ in range(rows))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b""))
    return str(path)
