"""Is a resumed run exactly the uninterrupted one, under the kernels another processor would pick?

For each kernel setting (ATen's CPU capability, oneDNN's ISA cap), it trains the reference run, then
the same run sent SIGTERM mid-way through an epoch (``tests/stop_points.py kill-at-step``, the step
being the middle of epoch 1 unless ``--step`` says otherwise), resumes it from its ``last.ckpt`` and
compares the two ``metrics.json``: the largest absolute difference over every val and test figure.
The run is the trust issue's probe: upstream on digits, ViT-Tiny of depth 2, 3 epochs of 64 images a
batch. It prints one markdown row per setting, with the CPU's name.

    python benchmarks/resume_exactness.py [--settings default,avx2,avx512,onednn-avx2] [--tiny]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = ["task=upstream", "dataset=digits", "backbone=vit_tiny", "backbone.depth=2", "trainer.max_epochs=3", "data.batch_size=64",
         "trainer.enable_progress_bar=false"]
# the tests' tiny model, for the benchmark's own test
TINY = ["backbone.depth=1", "backbone.embed_dim=36", "backbone.num_heads=3", "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
SETTINGS = {  # name -> environment
    "default": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx2+onednn-avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def cpu_name() -> str:
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        return names[0].strip() if names else platform.processor()
    except OSError:
        return platform.processor() or platform.machine()


def run(env: dict[str, str], run_dir: Path, script: Path, *args: str) -> int:
    out = subprocess.run([sys.executable, str(script), *args, f"hydra.run.dir={run_dir}"], cwd=run_dir.parent, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=1800)
    if out.returncode not in (0, 143):
        sys.exit(f"error: {script.name} exited {out.returncode} in {run_dir}:\n{out.stderr[-2000:]}")
    return out.returncode


def figures(run_dir: Path) -> dict[str, float]:
    summary = json.loads((run_dir / "metrics.json").read_text())
    return {f"{split}/{k.split('/', 1)[-1]}": float(v) for split in ("val", "test") for k, v in (summary.get(split) or {}).items()
            if isinstance(v, (int, float))}


def one_setting(name: str, args: list[str], step: int | None, work: Path) -> dict:
    env = {**os.environ, **SETTINGS[name], "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    work.mkdir()
    train, stop = REPO / "train.py", REPO / "tests" / "stop_points.py"
    run(env, work / "reference", train, *args)
    if step is None:  # the middle of epoch 1
        import torch

        last = torch.load(work / "reference" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        per_epoch = last["global_step"] // 3
        step = per_epoch + per_epoch // 2
    code = run(env, work / "stopped", stop, "kill-at-step", str(step), *args)
    if code != 143:
        sys.exit(f"error: the run was to be stopped at step {step} but exited {code}")
    run(env, work / "resumed", train, f"resume={work / 'stopped' / 'checkpoints' / 'last.ckpt'}")
    ref, res = figures(work / "reference"), figures(work / "resumed")
    diffs = {k: abs(ref[k] - res[k]) for k in ref if k in res}
    worst = max(diffs, key=lambda k: diffs[k]) if diffs else None
    largest = diffs[worst] if worst else float("nan")
    return {"setting": name, "step": step, "figures": len(diffs), "missing": sorted(set(ref) ^ set(res)),
            "max_abs_diff": largest, "worst": worst if largest else "-"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="default,avx2,avx512,onednn-avx2",
                        help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--step", type=int, default=None, help="the global step the SIGTERM comes at")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and 4 batches an epoch (for tests)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    names = [s for s in args.settings.split(",") if s]
    unknown = [s for s in names if s not in SETTINGS]
    if unknown:
        print(f"error: --settings {unknown[0]!r} is not one of {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    overrides = [*PROBE, *(TINY if args.tiny else [])]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; run: {' '.join(overrides)}", flush=True)
    print("| kernels | SIGTERM at step | figures compared | max abs diff | largest in | exact |", flush=True)
    print("|---|--:|--:|--:|---|---|", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row = one_setting(name, overrides, args.step, Path(tmp) / name)
            rows.append(row)
            exact = "yes" if row["max_abs_diff"] == 0.0 and not row["missing"] else "no"
            print(f"| {name} | {row['step']} | {row['figures']} | {row['max_abs_diff']:.6g} | {row['worst']} | {exact} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=1))
    return 0 if all(r["max_abs_diff"] == 0.0 and not r["missing"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
