"""Images per second of the RelViT upstream input pipeline on the CPU.

Times the project's batched pipeline (relvit.data.batch_transform: uint8 batch -> random crop with
padding 4 + horizontal flip -> float [0, 1] -> PatchAugment -> per-channel normalisation) on real CIFAR-10 images at 32 px with 4 px
patches and, upsampled, at 224 px with 32 px patches: as training runs it on the CPU (the patches
grouped by their draws), and, for comparison, in the sync-free form that accelerators run, with its
colour ops compiled (``PatchAugment(compile=True)``, compiled before the timing); next to them, a
reference that augments patch by patch with torchvision transforms as the original RelViT code did,
on one thread. Each figure is the median of ``--repeats`` timings, taken in turns (batched,
reference, batched, ...) so that load from other processes falls on both alike. The last lines are
the per-core speed-ups. See docs/data_pipeline.md.

    python benchmarks/data_pipeline.py [--images 4096] [--batch-size 256] [--threads N] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torchvision.io import ImageReadMode, decode_jpeg, read_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # benchmark the working tree, installed or not

from relvit.data.batch_transform import BatchTransform  # noqa: E402
from relvit.data.image_augment import BatchImageAugment  # noqa: E402
from relvit.data.patch_augment import CROP_SHRINK, PatchAugment, PatchParams  # noqa: E402

# CIFAR-10 channel statistics, the normalisation of the upstream runs.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
OPS = "colJitter:0.8-grayScale:0.2"
PAD = 4


def load_cifar(data_dir: Path, archive: Path, count: int) -> torch.Tensor:
    """uint8 [count, 3, 32, 32] CIFAR-10 training images, taken evenly across the classes."""
    train = data_dir / "train"
    if not train.is_dir():
        if not archive.is_file():
            sys.exit(f"no CIFAR-10 images in {train} and no archive at {archive} (see ../shared/data/README.md)")
        data_dir.mkdir(parents=True, exist_ok=True)
        print(f"unpacking {archive} into {data_dir}", flush=True)
        subprocess.run(["tar", "-xJf", str(archive), "-C", str(data_dir)], check=True)
    paths = sorted(train.glob("*/*.jpg"))
    if len(paths) < count:
        sys.exit(f"{train} holds {len(paths)} images, fewer than the {count} asked for")
    step = len(paths) // count
    return torch.stack([decode_jpeg(read_file(str(p)), mode=ImageReadMode.RGB) for p in paths[::step][:count]])


class SyncFreePatchAugment(PatchAugment):
    """PatchAugment in the form accelerators run (every op on every patch, no host sync), on any device."""

    def augment_with_params(self, images: torch.Tensor, params: PatchParams) -> torch.Tensor:
        return self.augment_sync_free(images, params)


# The timed forms: as training runs it on the CPU, and the accelerators' form with compiled colour ops.
FORMS = {"grouped": (PatchAugment, False), "sync-free compiled": (SyncFreePatchAugment, True)}


def make_pipeline(image_size: int, patch_size: int, form: str) -> BatchTransform:
    """The project's on-device pipeline of an upstream training batch, as the data module builds it."""
    image_augment = BatchImageAugment(image_size, "crop_flip", "none", crop_padding=PAD, hflip=True)
    augment_class, compile_ops = FORMS[form]
    patch_augment = augment_class(patch_size, OPS, crop="random", mean=MEAN, std=STD, compile=compile_ops)
    return BatchTransform(image_augment, MEAN, STD, patch_augment=patch_augment)


def make_reference(image_size: int, patch_size: int):
    """The original's way: torchvision transforms on one image, then on each of its patches in turn."""
    image_tf = T.Compose([T.RandomCrop(image_size, padding=PAD), T.RandomHorizontalFlip()])
    patch_tf = T.Compose([
        T.RandomCrop(round(patch_size / CROP_SHRINK)),
        T.Resize(patch_size, antialias=True),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(0.2),
    ])
    normalise = T.Normalize(MEAN, STD)
    grid = image_size // patch_size

    def run(image: torch.Tensor) -> torch.Tensor:
        x = image_tf(image.float() / 255.0)
        patches = [
            patch_tf(x[:, i : i + patch_size, j : j + patch_size])
            for i in range(0, image_size, patch_size)
            for j in range(0, image_size, patch_size)
        ]
        # [N, 3, P, P] -> [3, H, W]
        out = torch.stack(patches).reshape(grid, grid, 3, patch_size, patch_size)
        out = out.permute(2, 0, 3, 1, 4).reshape(3, image_size, image_size)
        return normalise(out)

    return run


def time_batched(pipeline: BatchTransform, images: torch.Tensor, batch_size: int) -> float:
    """Images per second of the batched pipeline over ``images`` (warmed up, and compiled, before)."""
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        pipeline(images[i : i + batch_size], train=True)
    return len(images) / (time.perf_counter() - start)


def time_reference(run, images: torch.Tensor) -> float:
    """Images per second of the per-patch torchvision reference on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for image in images:
            run(image)
        return len(images) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def report(label: str, images: torch.Tensor, patch_size: int, batch_size: int, ref_count: int,
           repeats: int) -> dict[str, float]:
    """Print the figures (medians) of both forms and of the reference for one size; returns the per-core ratios."""
    threads = torch.get_num_threads()
    ref_count = min(ref_count, len(images))
    pipelines = {form: make_pipeline(images.shape[-1], patch_size, form) for form in FORMS}
    for pipeline in pipelines.values():
        pipeline(images[:batch_size], train=True)  # warm-up; compiles the compiled one
    reference = make_reference(images.shape[-1], patch_size)
    reference(images[0])
    times: dict[str, list[float]] = {**{form: [] for form in FORMS}, "reference": []}
    for _ in range(repeats):
        for form, pipeline in pipelines.items():
            times[form].append(time_batched(pipeline, images, batch_size))
        times["reference"].append(time_reference(reference, images[:ref_count]))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{label}: {images.shape[-1]} px images, {patch_size} px patches, crop=random, ops={OPS}, "
          f"median of {repeats}")
    for form in FORMS:
        spread = f"{min(times[form]):.1f}-{max(times[form]):.1f}"
        print(f"  batched, {form:18s} {len(images):5d} images, batch {batch_size:3d}: {med[form]:9.1f} img/s, "
              f"{med[form] / threads:9.1f} img/s per thread ({threads} threads; range {spread})")
    print(f"  reference, per patch       {ref_count:5d} images           : {med['reference']:9.1f} img/s per core "
          f"(1 thread; range {min(times['reference']):.1f}-{max(times['reference']):.1f})")
    return {form: med[form] / threads / med["reference"] for form in FORMS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096, help="images timed at 32 px")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size at 32 px")
    parser.add_argument("--images-224", type=int, default=256, help="images timed at 224 px")
    parser.add_argument("--batch-size-224", type=int, default=32, help="batch size at 224 px")
    parser.add_argument("--reference-images", type=int, nargs=2, default=(200, 20), metavar=("N32", "N224"),
                        help="images the per-patch reference runs on at 32 and 224 px")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the batched pipeline")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure; the median is printed")
    # RELVIT_DATA_DIR moves data/, as for the training runs
    data_root = Path(os.environ.get("RELVIT_DATA_DIR") or REPO / "data")
    parser.add_argument("--data-dir", type=Path, default=data_root / "cifar10-jpeg")
    parser.add_argument("--archive", type=Path, default=REPO / ".." / "shared" / "data" / "cifar10-train-jpeg.tar.xz")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    images = load_cifar(args.data_dir, args.archive, max(args.images, args.images_224))
    images_32 = images[: args.images]
    images_224 = F.interpolate(images[: args.images_224].float(), size=224, mode="bilinear", antialias=True)
    images_224 = images_224.round_().clamp_(0, 255).to(torch.uint8)
    # Other processes on the machine distort the figures, the multi-threaded ones most: say how busy it was.
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads for the batched pipeline, "
          f"{os.cpu_count()} CPUs, load average {load:.2f} before the timings")

    ratio_224 = report("224px", images_224, 32, args.batch_size_224, args.reference_images[1], args.repeats)
    ratio_32 = report("32px", images_32, 4, args.batch_size, args.reference_images[0], args.repeats)
    print(f"load average {os.getloadavg()[0]:.2f} after the timings")
    for form in FORMS:
        suffix = "" if form == "grouped" else "_" + form.replace("-", "_").replace(" ", "_")
        print(f"ratio_224px_per_core{suffix}: {ratio_224[form]:.1f}")
        print(f"ratio_32px_per_core{suffix}: {ratio_32[form]:.1f}")


if __name__ == "__main__":
    main()
