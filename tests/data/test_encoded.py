"""JPEG files read as bytes by the workers and decoded where the model runs: the workers hand over
exactly the split's files, and the decoded, transformed batches agree with the PIL path's.

Tolerance (uint8 levels, 0-255): the byte path decodes with torchvision's libjpeg-turbo on the CPU and
nvJPEG on a GPU; PIL decodes with its own libjpeg. On the CPU the two gave identical pixels on these
images (difference 0 measured, with torch 2.14.1 / torchvision 0.29.1 / Pillow here); the test allows 1
level per pixel for other library builds. nvJPEG's IDCT and chroma upsampling may differ from libjpeg's by
a few levels on edges, so the GPU comparison allows a mean |difference| of 1.5 levels and no pixel more
than 24 levels apart (not yet run on a GPU).
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from relvit.config.checks import check_config
from relvit.data.encoded import (
    EncodedBatch,
    EncodedImageDataset,
    collate_encoded,
    decode_batch,
    decodes_on_device,
    without_pil_step,
)
from relvit.data.loaders import FileImageDataset, file_transform
from relvit.errors import ConfigError

CPU_MAX_LEVELS = 1
CPU_MEAN_LEVELS = 0.05
GPU_MAX_LEVELS = 24
GPU_MEAN_LEVELS = 1.5
SIZE = 32


def write_jpegs(root: Path, count: int = 12) -> list[str]:
    """Digits upscaled to a few sizes and coloured, written as JPEG files: their paths, in order."""
    digits = load_digits().images[:count] / 16.0
    paths = []
    for i, digit in enumerate(digits):
        w, h = (48, 40) if i % 3 == 0 else (40, 56) if i % 3 == 1 else (44, 44)
        grey = Image.fromarray((digit * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
        rgb = np.stack([np.asarray(grey), 255 - np.asarray(grey), np.full((h, w), (40 + 15 * i) % 256, np.uint8)], -1)
        path = root / f"class{i % 2}" / f"{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path, quality=90)
        paths.append(str(path))
    return paths


@pytest.fixture
def jpegs(tmp_path):
    return write_jpegs(tmp_path)


def both_paths(paths: list[str], train: bool, transform_name: str, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(PIL path, byte path) uint8 [N, 3, SIZE, SIZE] of the same files with the same random draws."""
    kwargs = dict(train_transform="resized_crop_flip", eval_transform=transform_name) if not train else \
        dict(train_transform=transform_name, eval_transform="none")
    transform = file_transform(SIZE, train, crop_padding=4, hflip=train, **kwargs)
    pil = FileImageDataset(paths, torch.zeros(len(paths), dtype=torch.long), transform)
    reference, decoded = [], []
    for i, path in enumerate(paths):
        torch.manual_seed(i)
        reference.append(pil[i][0])
        torch.manual_seed(i)
        batch, _ = collate_encoded([EncodedImageDataset([path], torch.zeros(1))[0]])
        decoded.append(decode_batch(batch, torch.device(device), without_pil_step(transform))[0].cpu())
    return torch.stack(reference), torch.stack(decoded)


def level_diff(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    diff = (a.int() - b.int()).abs()
    return int(diff.max()), float(diff.float().mean())


@pytest.mark.parametrize(("train", "transform_name"), [(False, "resize_center_crop"), (False, "resize"),
                                                       (True, "resized_crop_flip"), (True, "crop_flip")])
def test_bytes_decoded_on_the_cpu_match_the_pil_path(jpegs, train, transform_name):
    reference, decoded = both_paths(jpegs, train, transform_name)
    assert decoded.shape == reference.shape == (len(jpegs), 3, SIZE, SIZE) and decoded.dtype == torch.uint8
    worst, mean = level_diff(decoded, reference)
    assert worst <= CPU_MAX_LEVELS and mean <= CPU_MEAN_LEVELS, (worst, mean)


@pytest.mark.gpu
@pytest.mark.parametrize(("train", "transform_name"), [(False, "resize_center_crop"), (True, "resized_crop_flip")])
def test_bytes_decoded_on_the_gpu_match_the_pil_path(jpegs, train, transform_name):
    reference, decoded = both_paths(jpegs, train, transform_name, device="cuda")
    worst, mean = level_diff(decoded, reference)
    assert worst <= GPU_MAX_LEVELS and mean <= GPU_MEAN_LEVELS, (worst, mean)


def test_byte_reading_workers_hand_over_exactly_the_files_of_the_split(jpegs):
    labels = torch.arange(len(jpegs)) % 2
    loader = DataLoader(EncodedImageDataset(jpegs, labels), batch_size=5, num_workers=2, collate_fn=collate_encoded)
    seen, seen_labels = [], []
    for batch, batch_labels in loader:
        assert isinstance(batch, EncodedBatch)
        seen += [bytes(t.numpy()) for t in batch.data]
        seen_labels.append(batch_labels)
    assert seen == [Path(p).read_bytes() for p in jpegs]
    assert torch.equal(torch.cat(seen_labels), labels)


def test_decode_modes(jpegs, tiny_cfg):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert not decodes_on_device("auto", cpu, jpegs)  # auto picks the PIL path on the CPU
    assert decodes_on_device("auto", cuda, jpegs)
    assert not decodes_on_device("cpu", cuda, jpegs)
    assert not decodes_on_device("gpu", cuda, [*jpegs, "x/y.png"])  # PNG and other formats keep PIL
    with pytest.raises(ConfigError, match="data.decode='nvjpeg' is invalid: one of auto, cpu, gpu, device"):
        check_config(tiny_cfg("data.decode=nvjpeg"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA device")
def test_decode_gpu_without_a_gpu_is_a_config_error(tiny_cfg, tmp_path):

    root = tmp_path / "folders"
    write_jpegs(root / "train")
    cfg = tiny_cfg("dataset=image_folder", f"dataset.root={root}", "data.decode=gpu", "data.batch_size=4")
    with pytest.raises(ConfigError, match="data.decode='gpu' is invalid: this machine has no CUDA device"):
        check_config(cfg)


def test_auto_on_the_cpu_keeps_the_pil_path(tiny_cfg, tmp_path):
    from relvit.training.run import build

    root = tmp_path / "folders"
    write_jpegs(root / "train", count=24)
    cfg = tiny_cfg("dataset=image_folder", f"dataset.root={root}", "dataset.image_size=16", "dataset.patch_size=4",
                   "data.batch_size=4", "data.num_workers=0")
    datamodule = build(cfg).datamodule
    assert isinstance(datamodule.train_dataloader().dataset, FileImageDataset)
