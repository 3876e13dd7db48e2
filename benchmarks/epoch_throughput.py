"""Training images per second of RelViT upstream, per data path, on the CPU or the GPU.

32 px, on the CIFAR-10 JPEGs:
- in-memory: dataset=cifar10 decodes the JPEGs once into a uint8 tensor that stays on the model's
  device; batches are sliced and augmented there (image-level and per-patch), no workers;
- workers: dataset=image_folder over the same folder, decoded by PIL in DataLoader workers.
224 px, on a folder of larger JPEGs written from the CIFAR-10 images (random sizes 240-320 px):
- decode=cpu: PIL decodes, crops and resizes in the workers;
- decode=gpu: the workers read the bytes only; the batch is decoded and transformed on the model's
  device (on a CPU-only machine the benchmark runs that path on the CPU, which the config refuses).
For each it prints images/s of the data alone (loader + on-device transform), of the model alone
(forward, backward, optimiser step on one batch already on the device), and of whole training
(Lightning's loop over the loader): when the last is near the model figure, the data path hides
behind the model. Each figure is the median over ``--repeats`` measurements.

    python benchmarks/epoch_throughput.py [--batches 8] [--batch-size 128] [--workers 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # benchmark the working tree, installed or not

from relvit.cli import log_lightning_once  # noqa: E402
from relvit.data.download import extract_archive  # noqa: E402
from relvit.model.hardware import fused_on_cuda, resolve_precision  # noqa: E402
from relvit.training.run import build  # noqa: E402

CIFAR_STATS = "dataset.mean=[0.4914,0.4822,0.4465] dataset.std=[0.2470,0.2435,0.2616]".split()


class BatchTimer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.start = self.end = 0.0
        self.batches = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.end = time.perf_counter()
        self.batches = batch_idx + 1 - self.warmup


def compose_run(overrides: list[str], output_dir: Path):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.root_dir={REPO}", f"paths.output_dir={output_dir}", *overrides])


def data_rate(run, batches: int, batch_size: int, device: torch.device) -> float:
    """Images/s of the loader plus the batch transform on ``device``, no model."""
    loader = iter(run.datamodule.train_dataloader())

    def one() -> None:
        images, labels = next(loader)
        if isinstance(images, torch.Tensor):
            images = images.to(device, non_blocking=True)
        run.datamodule.transform_batch(images, train=True, device=device)

    return images_per_second(one, 1, batches, batch_size, device)


def model_rate(run, batches: int, batch_size: int, device: torch.device) -> float:
    """Images/s of forward, backward and optimiser step on one transformed batch kept on the device,
    with the precision and optimiser a run there gets."""
    module = run.module.to(device).train()
    images, labels = next(iter(run.datamodule.train_dataloader()))
    if isinstance(images, torch.Tensor):
        images = images.to(device)
    images, labels = run.datamodule.transform_batch(images, train=True, device=device), labels.to(device)
    optimizer = fused_on_cuda(module.optimizer_factory, device)(module.parameters())
    bf16 = resolve_precision("gpu" if device.type == "cuda" else "cpu") == "bf16-mixed"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.compute_losses(images, labels)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return images_per_second(step, 2, batches, batch_size, device)


def train_rate(run, batches: int, batch_size: int) -> float:
    """Images/s of Lightning's training loop over the loader, after two warm-up steps."""
    timer = BatchTimer(warmup=2)
    trainer = L.Trainer(accelerator="auto", devices=1, max_epochs=1, limit_train_batches=batches + 2, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], gradient_clip_val=1.0, precision=resolve_precision("auto"))
    trainer.fit(run.module, datamodule=run.datamodule)
    return timer.batches * batch_size / (timer.end - timer.start)


def images_per_second(step: Callable[[], None], warmup: int, batches: int, batch_size: int, device: torch.device) -> float:
    """Images/s of ``batches`` calls of ``step`` (one batch each) after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(batches):
        step()
    sync(device)
    return batches * batch_size / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_large_jpegs(cifar: Path, out: Path, count: int) -> None:
    """``count`` JPEGs of 240-320 px a side in ``out/train/<class>/``, upscaled from the CIFAR-10 images."""
    rng = random.Random(0)
    files = sorted(cifar.glob("train/*/*.jpg"))
    sources = files[:: max(1, len(files) // count)][:count]  # spread over the classes
    for i, src in enumerate(sources):
        dest = out / "train" / src.parent.name / f"{i:05d}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as im:
            size = (rng.randint(240, 320), rng.randint(240, 320))
            im.convert("RGB").resize(size, Image.BICUBIC).save(dest, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8, help="timed batches per measurement")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size at 32 px")
    parser.add_argument("--batch-size-224", type=int, default=64, help="batch size at 224 px")
    parser.add_argument("--backbone", default="vit_tiny", help="backbone at 32 px")
    parser.add_argument("--backbone-224", default="vit_small", help="backbone at 224 px (32 px patches)")
    parser.add_argument("--images-224", type=int, default=640, help="JPEGs written for the 224 px folder")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the file paths")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure; the median is printed")
    parser.add_argument("--only", nargs="*", default=None, help="paths to run (default all)")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "cifar10-jpeg")
    parser.add_argument("--archive", type=Path, default=REPO / ".." / "shared" / "data" / "cifar10-train-jpeg.tar.xz")
    args = parser.parse_args()
    log_lightning_once()  # no cloud adverts between the figures
    if not (args.data_dir / "train").is_dir():
        print(f"unpacking {args.archive} into {args.data_dir}", flush=True)
        extract_archive(args.archive, args.data_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workers = [f"data.num_workers={args.workers}"]
    folder_32 = ["dataset=image_folder", "dataset.image_size=32", "dataset.patch_size=4", "dataset.train_transform=crop_flip",
                 "dataset.crop_padding=4", "dataset.eval_transform=none", "dataset.num_classes=10", *CIFAR_STATS]
    at_32 = [f"backbone={args.backbone}", f"data.batch_size={args.batch_size}", f"dataset.root={args.data_dir}"]
    at_224 = [f"backbone={args.backbone_224}", f"data.batch_size={args.batch_size_224}", "dataset=image_folder",
              "dataset.num_classes=10", *workers]
    paths = {
        "32px in-memory": (["dataset=cifar10", *at_32], args.batch_size, None),
        "32px workers": ([*at_32, *folder_32, *workers], args.batch_size, "cpu"),
        "224px decode=cpu": (at_224, args.batch_size_224, "cpu"),
        "224px decode=gpu": (at_224, args.batch_size_224, "gpu"),
    }
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name() if device.type == 'cuda' else f'{os.cpu_count()} CPUs'}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}; median of {args.repeats}")
    print("| path | backbone | batch | data only img/s | model only img/s | training img/s | training / model |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, (overrides, batch, decode) in paths.items():
            if args.only and name not in args.only:
                continue
            if name.startswith("224") and not (Path(folder) / "train").is_dir():
                write_large_jpegs(args.data_dir, Path(folder), args.images_224)
            root = [f"dataset.root={folder}"] if name.startswith("224") else []
            figures = {"data": [], "model": [], "train": []}
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    L.seed_everything(0, verbose=False)
                    run = build(compose_run(["task=upstream", *overrides, *root], Path(tmp)))
                    if decode:  # decode=gpu is refused without CUDA; the benchmark runs its byte path anyway
                        run.datamodule.decode = decode
                    figures["data"].append(data_rate(run, args.batches, batch, device))
                    figures["model"].append(model_rate(run, args.batches, batch, device))
                    figures["train"].append(train_rate(run, args.batches, batch))
            med = {k: statistics.median(v) for k, v in figures.items()}
            backbone = overrides[0].split("=")[1] if overrides[0].startswith("backbone=") else args.backbone
            print(f"| {name} | {backbone} | {batch} | {med['data']:.1f} | {med['model']:.1f} | {med['train']:.1f} "
                  f"| {med['train'] / med['model']:.2f} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} after the timings")


if __name__ == "__main__":
    main()
