"""The two ways batches reach the model: tensors held in (device) memory, or files decoded by workers."""
from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from relvit.data.image_augment import CENTER_CROP_FRACTION


class InMemoryLoader:
    """Batches of (uint8 images [B, 3, H, W], labels [B]) sliced from tensors that already sit on
    the model's device: an epoch needs no worker processes and no host-to-device copies.

    Shuffling draws from a generator seeded with ``seed + epoch``, so runs repeat exactly; ``epoch``
    reads the trainer's epoch (by default, the loader counts its passes). ``position`` reads how many
    batches of the current epoch the trainer has taken; an epoch's batches start there, read when its
    first batch is drawn: 0 in a new epoch, the restored count in a run resumed mid-epoch, which so goes
    on with the very batches the interrupted run would have seen.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, epoch: Callable[[], int] | None = None, num_batches: int | None = None,
                 position: Callable[[], int] | None = None):
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.passes = 0
        self.epoch = epoch or (lambda: self.passes)
        self.num_batches = num_batches  # caps an epoch, so that every DDP rank steps equally often
        self.position = position

    def __len__(self) -> int:
        n = self.labels.numel()
        batches = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return batches if self.num_batches is None else min(batches, self.num_batches)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.epoch()), "position": int(self.position()) if self.position else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # the position comes from the trainer's restored batch count instead: Lightning builds the
        # training loader before it reads a checkpoint (configure_optimizers asks for
        # estimated_stepping_batches), and then never hands it this state. Being stateful still tells
        # Lightning that the loader resumes mid-epoch.
        del state

    def __iter__(self):
        n = self.labels.numel()
        epoch = self.epoch()
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch)).to(self.images.device)
            self.passes += 1
        else:
            order = torch.arange(n, device=self.images.device)
        start = int(self.position()) if self.position else 0
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


def file_transform(image_size: int, train: bool, train_transform: str, eval_transform: str, crop_padding: int, hflip: bool) -> v2.Transform:
    """The torchvision pipeline the streaming path runs per image in its workers: PIL -> uint8
    [3, image_size, image_size]. It mirrors ``BatchImageAugment`` of the in-memory path."""
    steps: list[v2.Transform] = [v2.PILToTensor()]
    if train and train_transform == "resized_crop_flip":
        steps.append(v2.RandomResizedCrop(image_size, antialias=True))
    elif not train and eval_transform == "resize_center_crop":
        steps += [v2.Resize(round(image_size / CENTER_CROP_FRACTION), antialias=True), v2.CenterCrop(image_size)]
    else:
        steps.append(v2.Resize((image_size, image_size), antialias=True))
        if train and train_transform == "crop_flip" and crop_padding:
            steps.append(v2.RandomCrop(image_size, padding=crop_padding))
    if train and hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


class FileImageDataset(Dataset):
    """Decodes one image file per sample: (uint8 [3, S, S], label)."""

    def __init__(self, paths: list[str], labels: torch.Tensor, transform: v2.Transform):
        self.paths = paths
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.paths[index]) as img:
            image = self.transform(img.convert("RGB"))
        return image, self.labels[index]


class TensorImageDataset(Dataset):
    """In-memory uint8 images served through DataLoader workers (with data.in_memory_on_device=false)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]
