"""The two ways batches reach the model: tensors held in (device) memory, or files decoded by workers."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
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
        return batch_count(self.labels.numel(), self.batch_size, self.drop_last, self.num_batches)

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
            order = epoch_order(n, self.seed, epoch).to(self.images.device)
            self.passes += 1
        else:
            order = torch.arange(n, device=self.images.device)
        start = int(self.position()) if self.position else 0
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


def batch_count(n: int, batch_size: int, drop_last: bool, num_batches: int | None) -> int:
    """Batches of an epoch of ``n`` samples (both loaders), capped at ``num_batches`` (every DDP rank
    steps equally often)."""
    batches = n // batch_size if drop_last else -(-n // batch_size)
    return batches if num_batches is None else min(batches, num_batches)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of ``n`` training samples in ``epoch``: a permutation drawn from ``seed + epoch``, the
    same in every run (both loaders: the streamed one serves the batches the in-memory one would)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


class EpochBatch(NamedTuple):
    """One training batch, as a DataLoader's batch sampler hands it to a worker: the samples' indices
    and the epoch, which with the dataset's seed fixes each sample's random augmentation."""

    epoch: int
    indices: list[int]


class EpochBatches:
    """The batch sampler of a streamed training split: ``EpochBatch``es of ``indices`` (this rank's
    shard of the split, or all of it) in the order ``epoch_order(len(indices), seed, epoch)``, like
    ``InMemoryLoader``. An epoch starts at ``position()``, the batches of it the trainer has taken
    (0 in a new epoch, the restored count in a run resumed mid-epoch); both are read when the epoch's
    first batch is asked for. ``num_batches`` caps an epoch, so that every DDP rank steps equally often.
    """

    def __init__(self, indices: torch.Tensor, batch_size: int, seed: int, drop_last: bool,
                 epoch: Callable[[], int] | None = None, position: Callable[[], int] | None = None,
                 num_batches: int | None = None):
        self.indices = indices
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.passes = 0
        self.epoch = epoch or (lambda: self.passes)
        self.position = position
        self.num_batches = num_batches

    def __len__(self) -> int:
        return batch_count(self.indices.numel(), self.batch_size, self.drop_last, self.num_batches)

    def __iter__(self):
        epoch = int(self.epoch())
        self.passes += 1
        order = self.indices[epoch_order(self.indices.numel(), self.seed, epoch)]
        start = int(self.position()) if self.position else 0
        for i in range(start, len(self)):
            yield EpochBatch(epoch, order[i * self.batch_size : (i + 1) * self.batch_size].tolist())


class StreamedLoader:
    """A training DataLoader (workers decode the files) that resumes mid-epoch exactly, like
    ``InMemoryLoader``: its batch sampler is ``EpochBatches``, and each image's random augmentation is
    drawn from (dataset seed, epoch, index), whichever worker decodes it.

    Not a DataLoader itself: Lightning would put a DistributedSampler in (the shards are cut here, as
    for in-memory data), and it makes the loader's iterator before it restores a checkpoint, while a
    DataLoader's iterator asks its sampler for batches as soon as it is made. Here the DataLoader's
    iterator is made when the epoch's first batch is drawn, after the restore.
    """

    def __init__(self, loader: DataLoader):
        if not isinstance(loader.batch_sampler, EpochBatches):
            raise TypeError("StreamedLoader needs a DataLoader whose batch_sampler is EpochBatches")
        self.loader = loader
        self.batches: EpochBatches = loader.batch_sampler

    @property
    def dataset(self) -> Dataset:
        return self.loader.dataset

    @property
    def _iterator(self) -> Any:
        # Lightning's teardown shuts the persistent workers down through the DataLoader's iterator
        return self.loader._iterator

    @_iterator.setter
    def _iterator(self, value: Any) -> None:
        self.loader._iterator = value

    def __len__(self) -> int:
        return len(self.batches)

    def state_dict(self) -> dict[str, int]:
        batches = self.batches
        return {"epoch": int(batches.epoch()), "position": int(batches.position()) if batches.position else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # as InMemoryLoader: the position is the trainer's restored batch count, read at the first batch
        del state

    def __iter__(self):
        yield from self.loader


def draw_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s random augmentation in ``epoch``: a 64-bit mix (splitmix64) of
    the three, folded to the 32 bits torch's CPU generator reads."""
    mask = (1 << 64) - 1
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xD1B54A32D192ED03 + index * 0xBF58476D1CE4E5B9 + 1) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    x ^= x >> 31
    return (x ^ (x >> 32)) & 0xFFFFFFFF


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
    """Decodes one image file per sample: (uint8 [3, S, S], label).

    A batch of ``EpochBatch`` keys (the training batch sampler's) draws each image's random
    transform from ``draw_seed(seed, epoch, index)``, on a seed of its own: the same augmentation
    whichever worker decodes the image and whatever it decoded before, so a resumed run repeats it.
    """

    def __init__(self, paths: list[str], labels: torch.Tensor, transform: v2.Transform, seed: int = 0):
        self.paths = paths
        self.labels = labels
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.paths[index]) as img:
            image = self.transform(img.convert("RGB"))
        return image, self.labels[index]

    def __getitems__(self, keys: EpochBatch | list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if not isinstance(keys, EpochBatch):
            return [self[i] for i in keys]
        # the process's own stream (the main process's, with num_workers=0) is left as it was
        state = torch.get_rng_state()
        try:
            samples = []
            for i in keys.indices:
                torch.default_generator.manual_seed(draw_seed(self.seed, keys.epoch, i))
                samples.append(self[i])
            return samples
        finally:
            torch.set_rng_state(state)


class TensorImageDataset(Dataset):
    """In-memory uint8 images served through DataLoader workers (with data.in_memory_on_device=false)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, keys: EpochBatch | list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # no random work per sample: the batch is augmented where the model runs
        return [self[i] for i in (keys.indices if isinstance(keys, EpochBatch) else keys)]
