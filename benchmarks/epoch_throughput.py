"""Training images per second of vit_tiny upstream on the CIFAR-10 JPEGs: in-memory path vs worker path.

In-memory: dataset=cifar10 decodes the JPEGs once into a uint8 tensor that stays on the model's
device; batches are sliced there and augmented there (image-level and per-patch), no workers.
Workers: dataset=image_folder over the same folder streams the files through DataLoader workers
(decode + crop/flip in the workers), the per-patch augmentation on the device.
For each path it prints the images/s of the data alone (loader + on-device transform) and of
training (forward, backward, optimiser step), over a fixed number of batches after a warm-up.

    python benchmarks/epoch_throughput.py [--batches 8] [--batch-size 128] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # benchmark the working tree, installed or not

from relvit.cli import log_lightning_once  # noqa: E402
from relvit.data.download import extract_archive  # noqa: E402
from relvit.training import build  # noqa: E402

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


def data_rate(run, batches: int, batch_size: int) -> float:
    """Images/s of the loader plus the batch transform, no model (before the trainer is attached,
    so on the CPU)."""
    loader = iter(run.datamodule.train_dataloader())
    images, _ = next(loader)
    run.datamodule.transform_batch(images, train=True)
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(loader)
        run.datamodule.transform_batch(images, train=True)
    return batches * batch_size / (time.perf_counter() - start)


def train_rate(run, batches: int, batch_size: int) -> float:
    """Images/s of training steps, after two warm-up steps."""
    timer = BatchTimer(warmup=2)
    trainer = L.Trainer(accelerator="auto", devices=1, max_epochs=1, limit_train_batches=batches + 2, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], gradient_clip_val=1.0)
    trainer.fit(run.module, datamodule=run.datamodule)
    return timer.batches * batch_size / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8, help="timed batches per measurement")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the worker path")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "cifar10-jpeg")
    parser.add_argument("--archive", type=Path, default=REPO / ".." / "shared" / "data" / "cifar10-train-jpeg.tar.xz")
    args = parser.parse_args()
    log_lightning_once()  # no cloud adverts between the figures
    if not (args.data_dir / "train").is_dir():
        print(f"unpacking {args.archive} into {args.data_dir}", flush=True)
        extract_archive(args.archive, args.data_dir)
    common = ["backbone=vit_tiny", "task=upstream", f"data.batch_size={args.batch_size}", f"dataset.root={args.data_dir}"]
    paths = {
        "in-memory": ["dataset=cifar10"],
        "workers": ["dataset=image_folder", "dataset.image_size=32", "dataset.patch_size=4", "dataset.train_transform=crop_flip",
                    "dataset.crop_padding=4", "dataset.eval_transform=none", "dataset.num_classes=10",
                    f"data.num_workers={args.workers}", *CIFAR_STATS],
    }
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name() if device == 'cuda' else f'{os.cpu_count()} CPUs'}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    for name, overrides in paths.items():
        with tempfile.TemporaryDirectory() as tmp:
            L.seed_everything(0, verbose=False)
            start = time.perf_counter()
            run = build(compose_run([*common, *overrides], Path(tmp)))
            setup = time.perf_counter() - start
            data = data_rate(run, args.batches, args.batch_size)
            train = train_rate(run, args.batches, args.batch_size)
        print(f"{name:9s}: setup {setup:5.1f} s, data only {data:8.1f} img/s, training {train:7.1f} img/s "
              f"({len(run.datamodule.splits['train'])} training images)", flush=True)


if __name__ == "__main__":
    main()
