"""The first GPU's acceptance run: every GPU path of the project, timed and checked, in one command.

Each step runs in its own process under its own time box, so a step that fails or hangs still leaves
the other steps' results. The results folder gets ``<step>.json`` per step, written as the step goes,
and ``results.json`` plus ``results.md`` (the tables ``docs/generate.py gpu_performance gpu_comparison``
puts into docs/performance.md and docs/results.md, with the card's name).

Steps (time boxes sum to 8 minutes on an H100/H200-class GPU):
- ``gpu_tests``: ``pytest -m gpu``: the training step under ``torch.cuda.set_sync_debug_mode("error")``,
  nvJPEG decode against PIL, the sync-free per-patch ops on the GPU against the CPU's grouped form, and
  every task trained with the defaults a CUDA device resolves to;
- ``train_step``: ViT-S 32/4 upstream and joint, ViT-S 224/16 upstream: img/s, TFLOP/s, the fraction
  of the card's dense bf16 peak and of a measured bf16 matmul, peak memory; eager and compiled;
- ``optimizer``: one AdamW step after gradient-norm clipping on ViT-S's parameters, fused against
  foreach;
- ``epoch_throughput``: data only, model only and training img/s, in memory at CIFAR-10's size and
  on a 224 px JPEG folder it writes, with ``data.decode=gpu`` and ``cpu``;
- ``comparison``: RelViT against scratch at 32 px (``experiment=relvit_vs_scratch``, one seed, all
  labels), about 3 minutes.

    python benchmarks/gpu_acceptance.py                    # on the GPU; results/gpu_acceptance-<time>/
    python benchmarks/gpu_acceptance.py --dry-run          # every step at tiny sizes on the CPU (CI)
    python benchmarks/gpu_acceptance.py --only optimizer   # one step, at full size, on any device

The 32 px data is a CIFAR-10 JPEG folder (``--cifar``; unpacked from ``--archive`` when that exists);
without one, the throughput step writes images of CIFAR-10's size and count, and the comparison runs
on the embedded digits upscaled to 32 px.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # the working tree, installed or not
sys.path.insert(0, str(REPO / "benchmarks"))

from relvit.runs.files import write_json, write_text  # noqa: E402

#: Dense bf16 tensor-core peak (TFLOP/s, no sparsity) from the vendors' datasheets, by device name.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
                    "H100 NVL": 835.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "B200": 2250.0}
#: Step -> time box in seconds on the GPU.
#: Every step's box without CUDA (the dry run, or one step at full size): a shared CPU, not the GPU's
#: budget, bounds it.
CPU_BOX = {True: 900, False: 1800}
STEPS = {"gpu_tests": 60, "train_step": 150, "optimizer": 25, "epoch_throughput": 80, "comparison": 165}


def device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"


def bf16_peak(name: str) -> float | None:
    """The card's dense bf16 peak in FLOP/s, or None for a card the table does not hold."""
    for key, tflops in BF16_PEAK_TFLOPS.items():
        if key.lower() in name.lower():
            return tflops * 1e12
    return None


class Recorder:
    """A step's result file, rewritten after every row so that a step killed by its box keeps its rows."""

    def __init__(self, path: Path, step: str, device: str):
        self.path, self.result = path, {"step": step, "device": device, "status": "running", "rows": [], "notes": []}
        self.flush()

    def row(self, **values) -> None:
        self.result["rows"].append(values)
        self.flush()

    def note(self, text: str) -> None:
        self.result["notes"].append(text)
        self.flush()

    def flush(self) -> None:
        write_json(self.path, self.result)


# -- the steps (each runs in a child process: python gpu_acceptance.py --step NAME) -------------------

def step_gpu_tests(rec: Recorder, dry: bool, args) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rA",
                           "tests/"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    for line in done.stdout.splitlines():  # -rA's summary: "PASSED test", "SKIPPED [n] file:line: reason"
        skipped = re.match(r"SKIPPED \[(\d+)\] (.+?):\d+: (.*)", line)
        other = re.match(r"(PASSED|FAILED|ERROR) (\S+)(?: - (.*))?", line)
        if skipped:
            rec.row(test=skipped[2], outcome="skipped", count=int(skipped[1]), reason=skipped[3].strip())
        elif other:
            rec.row(test=other[2], outcome=other[1].lower(), count=1, reason=(other[3] or "").strip()[:200])
    rec.note(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:])
    if done.returncode not in (0, 5) or not rec.result["rows"]:
        raise RuntimeError(f"pytest -m gpu exited {done.returncode}: {done.stdout[-500:]}{done.stderr[-500:]}")


def step_train_step(rec: Recorder, dry: bool, args) -> None:
    import torch
    from train_step import Setting, matmul_rate, measure

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = ("backbone.depth=1", "backbone.embed_dim=36", "backbone.num_heads=3")
    settings = ([(Setting("vit_tiny", "cifar10", 4, tiny), "upstream"), (Setting("vit_tiny", "cifar10", 4, tiny), "joint")]
                if dry else [(Setting("vit_small", "cifar10", 256), "upstream"), (Setting("vit_small", "cifar10", 256), "joint"),
                             (Setting("vit_small", "cifar10_224", 128, ("dataset.patch_size=16",)), "upstream")])
    steps = 1 if dry else 10
    matmul = matmul_rate(device, 512 if dry else 8192)
    peak = bf16_peak(device_name(device)) if device.type == "cuda" else None
    rec.note(f"bf16 matmul {matmul / 1e12:.1f} TFLOP/s measured" if device.type == "cuda"
             else f"fp32 matmul {matmul / 1e12:.3f} TFLOP/s measured (the CPU trains in fp32)")
    for setting, task in settings:
        size = "224/16" if "224" in setting.dataset else "32/4"
        for compiled in (False, True):
            if dry and compiled and task != "upstream":
                continue  # one compiled setting shows the path on the CPU; compiling is slow there
            figures = measure(setting, task, False, device, steps, compiled=compiled)
            rate = figures["flops_per_image"] * figures["img_s"]
            rec.row(backbone=setting.backbone, size=size, task=task, batch=setting.batch, compiled=compiled,
                    img_s=round(figures["img_s"], 1), tflops=round(rate / 1e12, 3),
                    of_peak=None if peak is None else round(rate / peak, 3), of_matmul=round(rate / matmul, 3),
                    peak_gib=round(figures["peak_gib"], 2))


def step_optimizer(rec: Recorder, dry: bool, args) -> None:
    """Clipping plus AdamW on ViT-S's parameters with random gradients: the median step, fused vs foreach."""
    import torch
    from epoch_throughput import sync
    from timm.models.vision_transformer import VisionTransformer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    size = dict(embed_dim=36, depth=1, num_heads=3) if dry else dict(embed_dim=384, depth=12, num_heads=6)
    params = [p for p in VisionTransformer(img_size=32, patch_size=4, num_classes=10, **size).to(device).parameters()]
    grads = [torch.randn_like(p) for p in params]
    count = sum(p.numel() for p in params)
    for kernel in ("fused", "foreach"):
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, **{kernel: True})
        times = []
        for i in range(4 if dry else 25):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            sync(device)
            start = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
            optimizer.step()
            sync(device)
            if i >= 2:  # the first steps allocate the state
                times.append(time.perf_counter() - start)
        rec.row(kernel=kernel, params_m=round(count / 1e6, 2), step_ms=round(1e3 * statistics.median(times), 3))


def step_epoch_throughput(rec: Recorder, dry: bool, args) -> None:
    import lightning as L
    import torch
    from epoch_throughput import compose_run, data_rate, model_rate, train_rate, write_large_jpegs

    from relvit.cli import log_lightning_once
    from relvit.training.run import build

    log_lightning_once()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workers = 0 if dry else min(16, os.cpu_count() or 1)
    tiny = ["backbone.depth=1", "backbone.embed_dim=36", "backbone.num_heads=3"] if dry else []
    batches, b32, b224 = (1, 8, 4) if dry else (30, 256, 128)
    with tempfile.TemporaryDirectory() as folder:
        cifar = cifar_folder(args, Path(folder) / "cifar", 200 if dry else 50_000, rec)
        large = Path(folder) / "large"
        write_large_jpegs(cifar, large, 40 if dry else 2_000)
        at_224 = ["backbone=vit_small", *tiny, "dataset=image_folder", f"dataset.root={large}", "dataset.num_classes=10",
                  "dataset.image_size=224", "dataset.patch_size=16", f"data.num_workers={workers}", f"data.batch_size={b224}"]
        paths = {"32px in-memory": (["backbone=vit_small", *tiny, "dataset=cifar10", f"dataset.root={cifar}",
                                     f"data.batch_size={b32}"], b32, None),
                 "224px JPEG decode=gpu": (at_224, b224, "gpu"), "224px JPEG decode=cpu": (at_224, b224, "cpu")}
        for name, (overrides, batch, decode) in paths.items():
            with tempfile.TemporaryDirectory() as out:
                L.seed_everything(0, verbose=False)
                run = build(compose_run(["task=upstream", *overrides], Path(out)))
                if decode:  # gpu off CUDA: the byte path on the CPU (the config refuses it there)
                    run.datamodule.decode = decode
                figures = {"data": data_rate(run, batches, batch, device), "model": model_rate(run, batches, batch, device),
                           "train": train_rate(run, batches, batch)}
            rec.row(path=name, batch=batch, data_img_s=round(figures["data"], 1), model_img_s=round(figures["model"], 1),
                    train_img_s=round(figures["train"], 1), train_of_model=round(figures["train"] / figures["model"], 2))


def step_comparison(rec: Recorder, dry: bool, args) -> None:
    cifar = args.cifar if (args.cifar / "train").is_dir() else None
    data = ["dataset=cifar10", f"dataset.root={cifar}"] if cifar else ["dataset.image_size=32", "dataset.crop_padding=4"]
    epochs = 8 if cifar else 30  # CIFAR-10's 45,000 training images take 31 times digits' steps per epoch
    budget = (["backbone.depth=1", "backbone.embed_dim=36", "backbone.num_heads=3", "trainer.max_epochs=1",
               "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
               "data.batch_size=16", 'comparison.finetune=["task=downstream","trainer.max_epochs=1"]',
               "comparison.linear.steps=20"] if dry else
              [f"trainer.max_epochs={epochs}",
               f'comparison.finetune=["task=downstream","trainer.max_epochs={epochs}","optimizer.lr=1.0e-3"]'])
    rec.note(f"data: {'CIFAR-10 JPEGs at ' + str(cifar) if cifar else 'the embedded digits upscaled to 32 px'}")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(REPO / "train.py"), "experiment=relvit_vs_scratch", *data, *budget,
                               "~comparison.budgets", "+comparison.budgets={100pct:[]}", "hydra.sweeper.params.seed=1",
                               "trainer.enable_progress_bar=false"], cwd=tmp, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        if done.returncode != 0:
            raise RuntimeError(f"train.py exited {done.returncode}: {done.stderr[-800:]}")
        rec.note(f"wall time {time.perf_counter() - start:.0f} s")
        (table,) = Path(tmp).glob("multirun/*/relvit_vs_scratch.md")
        lines = [line for line in table.read_text().splitlines() if line.startswith("|")]
        header = [c.strip() for c in lines[0].strip().strip("|").split("|")]
        for line in lines[2:]:  # under the header and its rule: one row per measure, one column per arm
            rec.row(**dict(zip(header, (c.strip() for c in line.strip().strip("|").split("|")))))


def cifar_folder(args, fallback: Path, count: int, rec: Recorder) -> Path:
    """The CIFAR-10 JPEG folder, or ``count`` generated 32 px JPEGs in its layout (throughput only)."""
    if (args.cifar / "train").is_dir():
        return args.cifar
    from PIL import Image

    rec.note(f"no CIFAR-10 folder at {args.cifar}: {count} generated 32 px JPEGs of CIFAR-10's layout")
    rng = random.Random(0)
    for i in range(count):
        path = fallback / "train" / str(i % 10) / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.effect_noise((32, 32), 30 + rng.random() * 60).convert("RGB").save(path, quality=90)
    return fallback


STEP_FUNCTIONS: dict[str, Callable] = {"gpu_tests": step_gpu_tests, "train_step": step_train_step,
                                       "optimizer": step_optimizer, "epoch_throughput": step_epoch_throughput,
                                       "comparison": step_comparison}


def run_step(name: str, out: Path, dry: bool, args) -> int:
    """The child: one step, its result file marked ok or failed with the error's last line."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rec = Recorder(out / f"{name}.json", name, device_name(device))
    try:
        STEP_FUNCTIONS[name](rec, dry, args)
    except Exception as error:  # the step's failure is its result; the parent goes on to the next step
        rec.result.update(status="failed", error=f"{type(error).__name__}: {error}"[-1500:])
        rec.flush()
        raise
    rec.result["status"] = "ok"
    rec.flush()
    return 0


# -- the parent: every step under its box, then the tables ---------------------------------------------

def run_all(out: Path, steps: list[str], dry: bool, args) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    results = {"started": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "dry_run": dry, "steps": {}}
    for name in steps:
        box = STEPS[name] if cuda else CPU_BOX[dry]
        print(f"[{name}] up to {box} s", flush=True)
        command = [sys.executable, __file__, "--step", name, "--out", str(out), "--cifar", str(args.cifar),
                   *(["--dry-run"] if dry else [])]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=box)
            tail = done.stderr[-1500:]
        except subprocess.TimeoutExpired as expired:
            done, tail = None, (expired.stderr or b"")[-1500:].decode(errors="replace")
        path = out / f"{name}.json"
        step = json.loads(path.read_text()) if path.is_file() else {"step": name, "rows": [], "notes": []}
        if done is None:
            step["status"] = f"timed out after {box} s"
        elif done.returncode != 0 and step.get("status") in (None, "running", "ok"):
            step["status"], step["error"] = "failed", tail
        step["seconds"] = round(time.perf_counter() - start, 1)
        if step["status"] != "ok":
            step["stderr_tail"] = tail
        results["steps"][name] = step
        print(f"[{name}] {step['status']} in {step['seconds']} s", flush=True)
    return results


def markdown(results: dict) -> str:
    """One table per step, under a summary of the steps (status, seconds, device)."""
    lines = ["| step | status | seconds | device |", "|---|---|--:|---|"]
    lines += [f"| {name} | {s['status']} | {s.get('seconds', '-')} | {s.get('device', '-')} |"
              for name, s in results["steps"].items()]
    for name, step in results["steps"].items():
        lines += ["", f"### {name}", ""]
        lines += [f"- {note}" for note in step.get("notes", [])]
        if step.get("error"):
            lines.append(f"- error: `{step['error'].strip().splitlines()[-1][:300]}`")
        rows = step.get("rows", [])
        if rows:
            keys = list(rows[0])
            lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join("-" if r.get(k) is None else str(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every step at tiny sizes (on the CPU: the CI check)")
    parser.add_argument("--only", nargs="+", choices=list(STEPS), help="these steps (default all)")
    parser.add_argument("--out", type=Path, default=None, help="results folder, new (default results/gpu_acceptance-<time>)")
    parser.add_argument("--cifar", type=Path, default=REPO / "data" / "cifar10-jpeg", help="CIFAR-10 JPEG folder")
    parser.add_argument("--archive", type=Path, default=REPO.parent / "shared" / "data" / "cifar10-train-jpeg.tar.xz")
    parser.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        return run_step(args.step, args.out, args.dry_run, args)
    out = args.out or REPO / "results" / f"gpu_acceptance-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    if out.exists() and any(out.iterdir()):
        print(f"error: --out {out} is not empty; results are never written over", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if not (args.cifar / "train").is_dir() and args.archive.is_file() and not args.dry_run:
        from relvit.data.download import extract_archive

        print(f"unpacking {args.archive} into {args.cifar}", flush=True)
        extract_archive(args.archive, args.cifar)
    results = run_all(out, args.only or list(STEPS), args.dry_run, args)
    write_json(out / "results.json", results)
    table = markdown(results)
    write_text(out / "results.md", table + "\n")
    print(table)
    print(f"results in {out}")
    return 0 if all(s["status"] == "ok" for s in results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
