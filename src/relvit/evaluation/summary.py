"""Sweep summaries: one row per job of a multirun (its overrides, status, wall time, and the
best-checkpoint metrics on val and test), written as summary.csv, summary.md and summary.png.

Written by a Hydra callback after every job (so a sweep that stops half-way still has one) and
at the end of the sweep; ``python -m relvit.summary <sweep_dir>`` rebuilds it from the job dirs.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from relvit.errors import RunFailed, UserError
from relvit.runs.distributed import is_rank_zero
from relvit.runs.files import atomic_write, write_text

#: What a job leaves in its dir for the summary: overrides, status, wall time, error.
JOB_RECORD = "sweep_job.json"
FILES = ("summary.csv", "summary.md", "summary.png")
#: What the wall_s column measures (SweepSummary's on_job_start to on_job_end, around the task function).
WALL_S = ("wall_s: seconds from Hydra's start of the job to its end (building, training and evaluating the run); "
          "the process start-up before the first job and the sweeper's work between jobs (Optuna's study) are not in it.")


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job dirs of a sweep, in job order: those Hydra started (``.hydra``) or that left a record."""
    found = [p for p in sweep_dir.iterdir() if p.is_dir() and ((p / ".hydra").is_dir() or (p / JOB_RECORD).is_file())]
    def order(path: Path) -> tuple[str, int]:
        # "<num>" or, for studies that continue, "<num>_<start time>": by start, then by number
        num, _, started = path.name.partition("_")
        return started, int(num) if num.isdigit() else 0

    return sorted(found, key=order)


def read_job(job_dir: Path) -> dict[str, Any]:
    """One row: the job's record, or for a job still running (or killed) what its dir shows."""
    record_path = job_dir / JOB_RECORD
    if record_path.is_file():
        row = json.loads(record_path.read_text())
    else:
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = _overrides(overrides_file) if overrides_file.is_file() else []
        row = {"overrides": overrides, "status": "unfinished", "wall_s": None, "error": ""}
    row["job"] = job_dir.name
    # the last phase's metrics: fine-tuning when the job ran a second phase
    for metrics_file in (job_dir / "finetune" / "metrics.json", job_dir / "metrics.json"):
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            row["monitor"] = metrics.get("monitor")
            for split in ("val", "test"):
                row.update(_metrics(metrics_file, metrics.get(split, {})))
            if row["status"] == "unfinished":
                row["status"] = "completed"
            break
    return row


def _overrides(path: Path) -> list[str]:
    """A job's overrides.yaml: a plain YAML list of strings (a tag or other node is refused)."""
    try:
        overrides = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} cannot be read: {str(err).splitlines()[0]}; it must be a YAML list of overrides") from None
    if overrides is None:
        return []
    if not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
        raise UserError(f"{path} cannot be read: it holds {type(overrides).__name__}, not a YAML list of overrides")
    return overrides


def _metrics(path: Path, values: Any) -> dict[str, float | None]:
    """The metrics of one split in a job's metrics.json: each a number, or null (non-finite)."""
    if not isinstance(values, dict):
        raise UserError(f"{path} is invalid: a split's metrics must be a mapping of names to numbers")
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{path} is invalid: {name}={value!r} must be a number (or null)")
    return values


def swept_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The override keys whose values differ between jobs (or that some jobs lack), in order."""
    values: dict[str, list[str]] = {}
    for row in rows:
        for key, value in dict(o.partition("=")[::2] for o in row["overrides"]).items():
            values.setdefault(key, []).append(value)
    return [k for k, v in values.items() if len(set(v)) > 1 or len(v) < len(rows)]


def _value(row: dict[str, Any], key: str) -> str:
    return next((o.partition("=")[2] for o in row["overrides"] if o.partition("=")[0] == key), "")


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Columns and cells shared by the CSV and the Markdown table."""
    keys = swept_keys(rows)
    metric_names = sorted({k for r in rows for k in r if k.startswith(("val/", "test/"))},
                          key=lambda k: (not k.startswith("val/"), k))
    header = ["job", *keys, "status", "wall_s", *metric_names, "overrides", "error"]
    cells = []
    for row in rows:
        wall = row.get("wall_s")
        cells.append([row["job"], *(_value(row, k) for k in keys), row["status"],
                      "" if wall is None else f"{wall:.1f}",
                      *("" if row.get(m) is None else f"{row[m]:.4f}" for m in metric_names),
                      " ".join(row["overrides"]), row.get("error", "")])
    return header, cells


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """(Re)write the three summary files of ``sweep_dir``; returns the rows."""
    sweep_dir = Path(sweep_dir)
    with _locked(sweep_dir):
        rows = [read_job(d) for d in job_dirs(sweep_dir)]
        header, cells = table(rows)
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *cells])
        write_text(sweep_dir / "summary.csv", buffer.getvalue())
        md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in cells]
        write_text(sweep_dir / "summary.md", f"# Sweep {sweep_dir}\n\n" + "\n".join(md) + f"\n\n{WALL_S}\n")
        plot(rows, sweep_dir / "summary.png")
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """The main (monitored) metric of each finished job, one bar per setting of the swept keys
    other than the seed (the bar is their mean, the dots the jobs)."""
    from matplotlib.figure import Figure

    keys = [k for k in swept_keys(rows) if k != "seed"]
    groups: dict[str, list[float]] = {}
    monitor = next((r["monitor"] for r in rows if r.get("monitor")), None)
    for row in rows:
        label = " ".join(f"{k}={_value(row, k)}" for k in keys) or "all jobs"
        groups.setdefault(label, [])
        if monitor and row.get(monitor) is not None:
            groups[label].append(row[monitor])
    fig = Figure(figsize=(max(4.0, 1.2 * len(groups) + 2), 3.5))
    ax = fig.add_subplot()
    for i, (label, values) in enumerate(groups.items()):
        if values:
            ax.bar(i, sum(values) / len(values), color="#9ecae1")
            ax.plot([i] * len(values), values, "o", color="#08519c")
    ax.set_xticks(range(len(groups)), list(groups), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(monitor or "no finished job")
    ax.set_title(f"{len(rows)} jobs ({sum(r['status'] == 'failed' for r in rows)} failed)")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))


@contextmanager
def _locked(sweep_dir: Path):
    # parallel jobs (joblib, SLURM) finish at the same time: one rebuild at a time sees every record.
    # Never truncated, and never through a link planted in the sweep dir (O_NOFOLLOW).
    path = sweep_dir / ".summary.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        raise UserError(f"cannot lock {path}: {err.strerror or err} (a symbolic link is never followed); "
                        "remove it to rebuild the summary") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class SweepSummary(Callback):
    """Hydra callback: records each job of a multirun and rebuilds the sweep's summary."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # before the sweeper starts: Optuna opens its study database inside the sweep dir
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started[config.hydra.runtime.output_dir] = time.time()

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or not is_rank_zero():
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        start = self.started.pop(str(job_dir), None)
        failed = job_return is not None and job_return.status.name == "FAILED"
        error = job_return._return_value if failed else None  # the exception; reading .return_value re-raises it
        record = {
            "overrides": list(config.hydra.overrides.task),
            "status": "failed" if failed else "completed",
            "wall_s": None if start is None else round(time.time() - start, 1),
            "error": f"{type(error).__name__}: {error}".splitlines()[0] if failed else "",
        }
        write_text(job_dir / JOB_RECORD, json.dumps(record, indent=2))
        write_summary(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if is_rank_zero() and sweep_dir.is_dir():
            write_summary(sweep_dir)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m relvit.summary <sweep_dir>   (a multirun/<time> folder)", file=sys.stderr)
        return 2
    try:
        rows = write_summary(Path(argv[0]))
    except (UserError, RunFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UserError) else 1
    print(f"{len(rows)} jobs: " + ", ".join(str(Path(argv[0]) / f) for f in FILES))
    return 0
