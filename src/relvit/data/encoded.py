"""JPEG files decoded where the model runs: loader workers read and batch the encoded bytes only, and
the batch is decoded on the model's device (nvJPEG on a GPU, libjpeg-turbo on the CPU) and transformed
there with the same torchvision transforms the PIL path runs in its workers.

``data.decode``: ``cpu`` decodes with PIL in the workers; ``gpu`` decodes JPEG splits on the GPU (a
split holding any other format keeps the PIL path); ``device`` takes that byte path on whatever device
the model runs on (nvJPEG on a GPU, torchvision's CPU decoder on the CPU: how the CPU runs a GPU's data
path); ``auto`` is ``gpu`` when the run is on a CUDA device and ``cpu`` otherwise.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import v2

from relvit.data.loaders import EpochBatch

DECODE_MODES = ("auto", "cpu", "gpu", "device")
JPEG_EXTENSIONS = (".jpg", ".jpeg")


def decodes_on_device(decode: str, device: torch.device, paths: Sequence[str]) -> bool:
    """Whether a split of ``paths`` is read as bytes and decoded on ``device`` rather than by PIL."""
    if decode == "cpu" or (decode in ("auto", "gpu") and device.type != "cuda"):
        return False
    return all(str(p).lower().endswith(JPEG_EXTENSIONS) for p in paths)


class EncodedBatch:
    """A batch of encoded files kept on the host (the decoder reads its input from host memory whatever
    device it decodes on): their bytes end to end, uint8 [total], and each file's length, int64 [B]. One
    tensor, not one per file: a worker hands each tensor over through a file descriptor of its own."""

    def __init__(self, flat: torch.Tensor, lengths: torch.Tensor):
        self.flat = flat
        self.lengths = lengths

    def __len__(self) -> int:
        return int(self.lengths.numel())

    @property
    def data(self) -> list[torch.Tensor]:
        """The files' bytes, uint8 [length] each, as views of ``flat``."""
        return list(torch.split(self.flat, self.lengths.tolist()))


class EncodedImageDataset(Dataset):
    """One file's bytes per sample: (uint8 [file size], label)."""

    def __init__(self, paths: list[str], labels: torch.Tensor):
        self.paths = paths
        self.labels = labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return read_file(self.paths[index]), self.labels[index]

    def __getitems__(self, keys: EpochBatch | list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # no random work per sample: the batch is decoded and augmented where the model runs
        return [self[i] for i in (keys.indices if isinstance(keys, EpochBatch) else keys)]


def collate_encoded(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[EncodedBatch, torch.Tensor]:
    """[(bytes, label)] -> (EncodedBatch, labels int64 [B])."""
    files = [s[0] for s in samples]
    lengths = torch.tensor([f.numel() for f in files], dtype=torch.int64)
    return EncodedBatch(torch.cat(files), lengths), torch.stack([torch.as_tensor(s[1]) for s in samples])


def decode_batch(batch: EncodedBatch, device: torch.device, transform: v2.Transform) -> torch.Tensor:
    """Decode every file on ``device`` (RGB; grey becomes RGB) and apply ``transform`` (the PIL path's
    torchvision transforms, without its PILToTensor) to each image: uint8 [B, 3, S, S] on ``device``.

    The images have their own sizes until the transform has resized them, so the transform runs image
    by image; its random draws are made on the host from the image sizes, with no device sync.
    """
    if device.type == "cuda":
        images = decode_jpeg(batch.data, mode=ImageReadMode.RGB, device=device)  # one batched nvJPEG call
    else:
        images = [decode_jpeg(data, mode=ImageReadMode.RGB) for data in batch.data]
    return torch.stack([transform(image) for image in images])


def without_pil_step(transform: v2.Compose) -> v2.Compose:
    """The PIL path's transforms less its leading PILToTensor: what decoded uint8 tensors go through."""
    return v2.Compose([t for t in transform.transforms if not isinstance(t, v2.PILToTensor)])
