"""Everything a run writes to disk: its claimed directory, atomic files, strict JSON."""
from __future__ import annotations

import json
import math
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from relvit.errors import RunFailed, UserError

#: Created exclusively by the run that owns a directory; its presence marks the directory as taken.
CLAIM_FILE = "run.json"
#: What a directory of an earlier run holds, also for runs that predate the claim file.
RUN_MARKERS = (CLAIM_FILE, "checkpoints", "metrics.json")


_UMASK = os.umask(0o022)
os.umask(_UMASK)


class OutputDirError(UserError):
    """The run directory is taken by another run, or cannot be written."""


class SaveError(RunFailed):
    """A file of the run could not be written; the message names it."""


def atomic_write(path: str | Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Write ``path`` through ``write(file)`` into a temp file beside it, flush it to disk and rename it
    into place: readers see the old file or the new one, never a part. On any failure the temp file is
    removed and SaveError names ``path``."""
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # same directory, so the rename never crosses a file system
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would create it; mkstemp makes it private
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as err:
        raise SaveError(f"could not write {path}: {err.strerror or err}") from None
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_json(path: str | Path, content: Any) -> None:
    """Atomically write ``content`` as strict JSON (NaN and infinities become null)."""
    text = json.dumps(finite_or_none(content), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text), binary=False)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False)


def claim_run_dir(output_dir: str | Path, key: str = "paths.output_dir") -> Path:
    """Make ``output_dir`` this run's own, before anything is written into it.

    The claim is an exclusive create of ``run.json``: of two runs given the same directory at once,
    exactly one gets it. A directory that holds an earlier run (or is not writable) is refused with an
    OutputDirError, and left as it was.
    """
    output_dir = Path(output_dir)
    for name in RUN_MARKERS:
        if (output_dir / name).exists():
            raise OutputDirError(f"{key}={str(output_dir)!r} already holds a run ({name}); choose a new output dir")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(output_dir / CLAIM_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise OutputDirError(f"{key}={str(output_dir)!r} was just claimed by another run; choose a new output dir") from None
    except OSError as err:
        raise OutputDirError(f"{key}={str(output_dir)!r} is not writable ({err.strerror or err}); choose a writable directory") from None
    claim = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "command": " ".join(sys.argv)}
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(claim, indent=2) + "\n")
    return output_dir


def write_hydra_files(output_dir: Path, cfg: DictConfig) -> None:
    """The ``.hydra/`` record of a run (composed config, Hydra's config, overrides), written after the
    claim (Hydra's own copy is switched off: it would be written before any claim could refuse the dir)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    folder = output_dir / ".hydra"
    write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    write_text(folder / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})))
    write_text(folder / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))
