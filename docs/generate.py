"""Rewrite the measured sections of docs/ by running what measures them, stamped with machine and commit.

Each section lives in one docs file between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``;
only that block is replaced (a file without it gets the block appended). Text around it is kept.

    python docs/generate.py                      # every section (the quick start takes minutes, CIFAR-10 most of an hour)
    python docs/generate.py quickstart backbones # some of them
    python docs/generate.py --list
    python docs/generate.py --tiny --docs-dir /tmp/docs   # seconds: tiny budgets, for the test
    RELVIT_GPU_RESULTS=results/gpu_acceptance-<time> python docs/generate.py gpu_performance gpu_comparison
                                                 # the tables of an acceptance run made on a GPU machine
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Where the CIFAR-10 section keeps its sweep (ignored by git): an hour of results outlives the generator.
SWEEPS = REPO / "multirun"
#: ``--override`` values: extra train.py overrides of the CIFAR-10 section (e.g. its launcher)
OVERRIDES: list[str] = []
#: ``--from-sweep``: the CIFAR-10 section reports this sweep dir instead of running one
FROM_SWEEP: list[Path] = []
#: ``--control``: (control, base) sweeps, the control a copy of the base resumed with one thing changed; the
#: base is the reported sweep unless ``--control CONTROL:BASE`` names another (with --from-sweep)
CONTROLS: list[tuple[Path, Path | None]] = []
TINY_RUN = ["backbone.depth=1", "backbone.embed_dim=36", "backbone.num_heads=3", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


@dataclass(frozen=True)
class Section:
    doc: str  # file under docs/
    command: str  # what a reader runs to measure it alone
    measure: Callable[[bool], str]  # tiny -> markdown


def _python(args: list[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> str:
    """stdout of ``python args`` with this checkout's sources first; a failure stops the generator."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: `python {' '.join(args)}` failed with exit {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def _train(overrides: list[str], outputs: Path) -> tuple[float, Path]:
    """Wall time and run dir of one ``train.py`` run writing under ``outputs``."""
    outputs.mkdir(parents=True)
    start = time.perf_counter()
    _python([str(REPO / "train.py"), *overrides, "trainer.enable_progress_bar=false"],
            env={"RELVIT_OUTPUT_DIR": str(outputs)}, cwd=outputs.parent)
    (metrics,) = [p for p in outputs.rglob("metrics.json") if "finetune" not in p.parts]
    return time.perf_counter() - start, metrics.parent


def _metric(run: Path, split: str, name: str) -> str:
    value = json.loads((run / "metrics.json").read_text()).get(split, {}).get(f"{split}/{name}")
    return "-" if value is None else f"{value:.4f}"


def quickstart(tiny: bool) -> str:
    """The quick start (pre-training then fine-tuning) next to fine-tuning from scratch, same budget."""
    budget = TINY_RUN if tiny else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny_second = ['finetune=["task=downstream","trainer.max_epochs=1"]'] if tiny else []
        wall, run = _train(["experiment=quickstart", *budget, *tiny_second], Path(tmp) / "a" / "outputs")
        tuned = run / "finetune"
        rows.append(("RelViT pre-training, then fine-tuning (`python train.py experiment=quickstart`)",
                     _metric(tuned, "val", "acc"), _metric(tuned, "test", "acc"), wall))
        wall, scratch = _train(["experiment=quickstart", "task=downstream", "finetune=null", *budget],
                               Path(tmp) / "b" / "outputs")
        rows.append(("fine-tuning from scratch, same budget (`... task=downstream finetune=null`)",
                     _metric(scratch, "val", "acc"), _metric(scratch, "test", "acc"), wall))
        pretext = {name: _metric(run, "test", name) for name in ("rel_acc", "pos_acc", "probe_acc")}
    lines = ["| run | val acc | test acc | wall time |", "|---|--:|--:|--:|"]
    lines += [f"| {name} | {val} | {test} | {wall:.0f} s |" for name, val, test, wall in rows]
    lines += ["", "The pre-training phase's best checkpoint on the test split: relation accuracy "
              f"{pretext['rel_acc']}, position accuracy {pretext['pos_acc']}, online probe {pretext['probe_acc']}."]
    return "\n".join(lines)


def relvit_vs_scratch(tiny: bool) -> str:
    """The three-seed table of ``experiment=relvit_vs_scratch`` as the sweep writes it, with its wall time."""
    budget = [*TINY_RUN, "data.batch_size=16", 'comparison.finetune=["task=downstream","trainer.max_epochs=1"]',
              "comparison.linear.steps=20", "hydra.sweeper.params.seed=1"] if tiny else []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        _python([str(REPO / "train.py"), "experiment=relvit_vs_scratch", *budget, "trainer.enable_progress_bar=false"],
                cwd=Path(tmp))
        wall = time.perf_counter() - start
        (table,) = Path(tmp).glob("multirun/*/relvit_vs_scratch.md")
        rows = [line for line in table.read_text().splitlines() if line.startswith("|")]
    return "\n".join([f"Whole sweep: {wall / 60:.1f} min of wall time.", "", *rows])


def relvit_vs_scratch_cifar10(tiny: bool) -> str:
    """The three-seed CIFAR-10 table, each arm's validation and test accuracy at every rate of the grid, and
    the pretext accuracy curve of pre-training. CIFAR-10 is read from ``$RELVIT_DATA_DIR/cifar10``; the
    sweep is kept in ``multirun/cifar10-<time>`` (a full run takes most of an hour)."""
    budget = [*TINY_RUN, "data.batch_size=8", "trainer.max_steps=2", "trainer.val_check_interval=1",
              'comparison.finetune=["task=downstream","data.batch_size=8","trainer.max_steps=2","trainer.val_check_interval=1"]',
              "comparison.linear.steps=5", "comparison.lrs=[1.0e-3]", "hydra.sweeper.params.seed=1"] if tiny else []
    if FROM_SWEEP:  # report a sweep that ran (or is running) elsewhere: its wall time from its files
        report = cifar10_report(FROM_SWEEP[0], sweep_wall_time(FROM_SWEEP[0]))
        controls = [f"### Control: {c.name}\n\n{control_report(base or FROM_SWEEP[0], c)}" for c, base in CONTROLS]
        return "\n\n".join([report, *controls])
    sweep = SWEEPS / f"cifar10-{datetime.now(timezone.utc):%Y-%m-%d_%H-%M-%S}"
    for override in OVERRIDES:  # an interrupted sweep resumed in its own dir (comparison.resume=true)
        if override.startswith("hydra.sweep.dir="):
            sweep = Path(override.split("=", 1)[1]).resolve()
    start = time.perf_counter()
    _python([str(REPO / "train.py"), "experiment=relvit_vs_scratch_cifar10", *budget, "trainer.enable_progress_bar=false",
             f"hydra.sweep.dir={sweep}", *OVERRIDES])
    wall = time.perf_counter() - start
    return cifar10_report(sweep, wall)


def control_pair(given: str) -> tuple[Path, Path | None]:
    """``DIR`` or ``DIR:BASE`` of ``--control``, resolved."""
    control, _, base = given.partition(":")
    return Path(control).resolve(), Path(base).resolve() if base else None


def control_report(main: Path, control: Path) -> str:
    """A controlled run (a sweep resumed from a copy of ``main`` with one thing changed): its own table,
    then its first pre-trained arm, frozen probes and pretext against the main sweep's, per seed."""
    import statistics

    def cell(values: list[float]) -> str:
        return f"{statistics.fmean(values):+.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"

    def jobs(sweep: Path) -> dict[int, dict]:
        return {j["seed"]: j for j in (json.loads(p.read_text()) for p in sorted(sweep.glob("*/comparison.json")))}

    _python(["-m", "relvit.comparison", str(control)])
    ours, base = jobs(control), jobs(main)
    seeds = sorted(set(ours) & set(base))
    arm = ours[seeds[0]]["pretrained_arm"] if seeds else "-"
    base_arm = base[seeds[0]]["pretrained_arm"] if seeds else "-"
    lines = [f"Sweep `{control.name}` (seeds {', '.join(map(str, seeds))}), against `{main.name}`, per seed "
             f"(control minus main):", "", f"| measure | {arm} (control) − {base_arm} (main) |", "|---|--:|"]
    for budget in base[seeds[0]]["finetune"] if seeds else []:
        if all(budget in ours[s]["finetune"] and arm in ours[s]["finetune"][budget] for s in seeds):
            diffs = [ours[s]["finetune"][budget][arm]["test/acc"] - base[s]["finetune"][budget][base_arm]["test/acc"] for s in seeds]
            lines.append(f"| fine-tuning test/acc, labels {budget} | {cell(diffs)} |")
    for name in sorted(k for k in (base[seeds[0]]["frozen"].get("pretrained", {}) if seeds else {}) if k.startswith("test/")):
        diffs = [ours[s]["frozen"]["pretrained"][name] - base[s]["frozen"]["pretrained"][name] for s in seeds
                 if name in ours[s]["frozen"].get("pretrained", {})]
        if diffs and any(abs(d) > 0 for d in diffs):
            lines.append(f"| frozen pre-trained {name} | {cell(diffs)} |")
    for name in ("val/rel_acc", "val/pos_acc"):
        diffs = [ours[s]["pretrain"][name] - base[s]["pretrain"][name] for s in seeds if name in ours[s]["pretrain"]]
        if diffs and any(abs(d) > 0 for d in diffs):
            lines.append(f"| pre-training {name} | {cell(diffs)} |")
    table = [line for line in (control / "relvit_vs_scratch.md").read_text().splitlines() if line.startswith("|")]
    return "\n".join([*lines, "", "The control sweep's own table:", "", *table])


def sweep_wall_time(sweep: Path) -> float:
    """Seconds from the first phase's start (its run.json) to the last file a job wrote."""
    starts = [datetime.strptime(json.loads(p.read_text())["started"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
              for p in sweep.glob("*/pretrain/run.json")]
    ends = [p.stat().st_mtime for p in sweep.glob("*/**/metrics.json")] + [p.stat().st_mtime for p in sweep.glob("*/comparison.json")]
    return max(ends) - min(starts) if starts and ends else float("nan")


def cifar10_report(sweep: Path, wall: float) -> str:
    """The markdown of a finished (or partly finished) ``relvit_vs_scratch_cifar10`` sweep."""
    import statistics

    def cell(values: list[float]) -> str:
        return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"

    jobs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/comparison.json"))]
    _python(["-m", "relvit.comparison", str(sweep)])  # the table from every job's comparison.json, finished or not
    table = [line for line in (sweep / "relvit_vs_scratch.md").read_text().splitlines() if line.startswith("|")]
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    lines = [f"Whole sweep: {wall / 60:.1f} min of wall time, {len(jobs)} seeds ({', '.join(str(j['seed']) for j in jobs)}), "
             f"OMP_NUM_THREADS={threads}; sweep dir `{sweep.relative_to(REPO) if sweep.is_relative_to(REPO) else sweep}`.",
             *([f"**Partial:** seeds {', '.join(str(j['seed']) for j in jobs if not j.get('complete', True))} did not finish; "
                "the tables hold the label budgets that every seed finished."] if not all(j.get("complete", True) for j in jobs) else []),
             "", "Mean ± standard deviation over the seeds; each difference is taken per seed, then summarised.", "",
             *table, "", "Every rate of the grid, per arm and label budget (the table keeps the one of highest val/acc):", "",
             "| labels | arm | lr | val/acc | test/acc |", "|---|---|--:|--:|--:|"]
    for budget, arms in jobs[0]["grid"].items():
        if not all(budget in j["grid"] for j in jobs):
            continue  # unfinished in some seed
        for arm, by_lr in arms.items():
            for lr in by_lr:
                val = [j["grid"][budget][arm][lr].get("val/acc") for j in jobs]
                test = [j["grid"][budget][arm][lr].get("test/acc") for j in jobs]
                lines.append(f"| {budget} | {arm} | {lr} | {cell([v for v in val if v is not None])} | "
                             f"{cell([t for t in test if t is not None]) if None not in test else '-'} |")
    curves: dict[int, dict[str, list[float]]] = {}
    for path in sorted(sweep.glob("*/pretrain/csv/metrics.csv")):
        with open(path) as f:
            rows = [row for row in csv.DictReader(f) if row.get("val/rel_acc")]
        if len(rows) > 1 and int(rows[-1]["step"]) == int(rows[-2]["step"]) + 1:
            rows = rows[:-1]  # the evaluation of the best checkpoint after training, one step on: not a point
        for row in rows:
            point = curves.setdefault(int(row["step"]), {"rel": [], "pos": []})
            point["rel"].append(float(row["val/rel_acc"]))
            point["pos"].append(float(row["val/pos_acc"]))
    lines += ["", "Pre-training's pretext accuracy on the validation split, by step:", "",
              "| step | relation acc | position acc |", "|--:|--:|--:|"]
    lines += [f"| {step + 1} | {cell(p['rel'])} | {cell(p['pos'])} |" for step, p in sorted(curves.items())]
    return "\n".join(lines)


def backbones(tiny: bool) -> str:
    return _python([str(REPO / "benchmarks" / "param_counts.py")]).strip()


def data_pipeline(tiny: bool) -> str:
    """The benchmark's printout on one thread: the per-core figure that a shared machine allows."""
    small = ["--images", "16", "--batch-size", "8", "--images-224", "4", "--batch-size-224", "2",
             "--reference-images", "4", "2"] if tiny else []
    out = _python([str(REPO / "benchmarks" / "data_pipeline.py"), "--threads", "1", *small]).strip()
    return f"```text\n{out}\n```"


@functools.cache
def _gpu_results(tiny: bool, folder: str | None) -> dict:
    """The acceptance run's results.json: the folder ``RELVIT_GPU_RESULTS`` names (a run made on a GPU
    machine, brought back), else a run made here now (its dry run when tiny or without CUDA)."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("gpu_acceptance", REPO / "benchmarks" / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not folder:
        folder = tempfile.mkdtemp(prefix="gpu_acceptance-")
        _python([str(REPO / "benchmarks" / "gpu_acceptance.py"), "--out", folder, *(["--dry-run"] if tiny or not torch.cuda.is_available() else [])])
    results = json.loads((Path(folder) / "results.json").read_text())
    results["render"] = module.markdown
    return results


def _gpu_section(tiny: bool, steps: tuple[str, ...]) -> str:
    results = _gpu_results(tiny, os.environ.get("RELVIT_GPU_RESULTS"))
    ran = {name: step for name, step in results["steps"].items() if name in steps}
    devices = sorted({step.get("device", "?") for step in ran.values()})
    head = (f"Run of `python benchmarks/gpu_acceptance.py` started {results['started']} on {', '.join(devices)}.")
    if results["dry_run"] or all(device.startswith("CPU") for device in devices):
        head += (" **No GPU figures yet**: this is the CPU dry run at tiny sizes, which shows every step runs;"
                 " its figures say nothing about a GPU.")
    return "\n".join([head, "", results["render"]({"steps": ran})])


def gpu_performance(tiny: bool) -> str:
    return _gpu_section(tiny, ("gpu_tests", "train_step", "optimizer", "epoch_throughput"))


def gpu_comparison(tiny: bool) -> str:
    return _gpu_section(tiny, ("comparison",))


SECTIONS: dict[str, Section] = {
    "quickstart": Section("results.md", "python train.py experiment=quickstart", quickstart),
    "relvit_vs_scratch": Section("relvit_vs_scratch.md", "python train.py experiment=relvit_vs_scratch", relvit_vs_scratch),
    "backbones": Section("backbones.md", "python benchmarks/param_counts.py", backbones),
    "data_pipeline": Section("data_pipeline.md", "python benchmarks/data_pipeline.py --threads 1", data_pipeline),
    "gpu_performance": Section("performance.md", "python benchmarks/gpu_acceptance.py", gpu_performance),
    "gpu_comparison": Section("results.md", "python benchmarks/gpu_acceptance.py", gpu_comparison),
    "relvit_vs_scratch_cifar10": Section("relvit_vs_scratch_cifar10.md", "python train.py experiment=relvit_vs_scratch_cifar10",
                                         relvit_vs_scratch_cifar10),
}


def machine() -> str:
    """CPU model, cores, GPU and torch version of this machine, in one phrase."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, load average {load:.1f} at the start"


def commit() -> str:
    """The checkout's commit, marked when code (anything but the docs' text) has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{sha} with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/*.md") else sha


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the generated block ``name`` holding ``body`` (appended if absent)."""
    start, end = f"<!-- generated: {name} -->", f"<!-- end: {name} -->"
    block = f"{start}\n{body}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return f"{text.rstrip()}\n\n{block}\n" if text.strip() else f"{block}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", help=f"default: all of {', '.join(SECTIONS)}")
    parser.add_argument("--list", action="store_true", help="print the sections and their files")
    parser.add_argument("--tiny", action="store_true", help="tiny budgets (for testing the generator)")
    parser.add_argument("--docs-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a train.py override of the relvit_vs_scratch_cifar10 section, e.g. hydra/launcher=joblib")
    parser.add_argument("--from-sweep", type=Path, default=None, metavar="DIR",
                        help="the relvit_vs_scratch_cifar10 section reports this (finished or partial) sweep dir")
    parser.add_argument("--control", action="append", default=[], metavar="DIR[:BASE]",
                        help="with --from-sweep: a controlled sweep to set against it (or against the sweep BASE), one thing changed")
    args = parser.parse_args(argv)
    OVERRIDES[:] = args.override
    CONTROLS[:] = [control_pair(c) for c in args.control]
    FROM_SWEEP[:] = [args.from_sweep.resolve()] if args.from_sweep else []
    if args.list:
        for name, section in SECTIONS.items():
            print(f"{name:15s} docs/{section.doc:18s} {section.command}")
        return 0
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        print(f"error: unknown section {unknown[0]!r}; valid: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    where, sha = machine(), commit()
    for name in args.sections or list(SECTIONS):
        section = SECTIONS[name]
        started = time.perf_counter()
        body = section.measure(args.tiny)
        given = "".join(f" --override {o}" for o in args.override) if name == "relvit_vs_scratch_cifar10" else ""
        if args.from_sweep and name == "relvit_vs_scratch_cifar10":
            given += f" --from-sweep {args.from_sweep}" + "".join(f" --control {c}" for c in args.control)
        stamp = (f"_Written by `python docs/generate.py {name}{given}` ({section.command}"
                 f"{', tiny budget' if args.tiny else ''}) on {where}; commit {sha}; "
                 f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {time.perf_counter() - started:.0f} s._")
        path = args.docs_dir / section.doc
        text = path.read_text() if path.exists() else ""
        path.write_text(replace_block(text, name, f"{stamp}\n\n{body}"))
        print(f"{path}: {name} rewritten", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
