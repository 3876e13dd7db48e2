"""One LightningDataModule for every dataset: splits, loaders, and the on-device batch pipeline."""
from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader

from relvit.config_checks import ConfigError
from relvit.data.batch_transform import BatchTransform
from relvit.data.image_augment import BatchImageAugment
from relvit.data.loaders import FileImageDataset, InMemoryLoader, TensorImageDataset, file_transform
from relvit.data.sources.base import DataSource, FileSplit, InMemorySplit
from relvit.data.splits import stratified_split
from relvit.distributed import EvalShardSampler, eval_shard, train_batches, train_shard

log = logging.getLogger(__name__)

MODEL_SELECTION_SPLITS = ("val", "test")


class RelViTDataModule(L.LightningDataModule):
    """Serves train / val / test batches of uint8 images and turns them, on the model's device, into
    normalised float batches: image-level augmentation for in-memory data, the task's mega-patch
    tiling (every split), its per-patch augmentation (training only), per-channel normalisation.

    A validation split is held out of the training data (stratified, fixed seed) when the source
    has none. ``select_on: test`` makes the "val" loader serve the test split instead: the
    original project's model selection on the test set, kept only to reproduce its numbers.
    """

    def __init__(
        self,
        source: DataSource,
        image_size: int,
        mean: list[float],
        std: list[float],
        train_transform: str,
        eval_transform: str,
        crop_padding: int = 0,
        hflip: bool = False,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = True,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        select_on: str = "val",
        in_memory_on_device: bool = True,
        patch_augment: torch.nn.Module | None = None,
        megapatch: torch.nn.Module | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if select_on not in MODEL_SELECTION_SPLITS:
            raise ValueError(f"data.select_on must be one of {MODEL_SELECTION_SPLITS}, got {select_on!r}")
        self.source = source
        self.image_size = image_size
        self.image_augment = BatchImageAugment(image_size, train_transform, eval_transform, crop_padding, hflip)
        self.batch_transform = BatchTransform(self.image_augment, mean, std, patch_augment, megapatch)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.select_on = select_on
        self.in_memory_on_device = in_memory_on_device
        self.seed = seed
        self.splits: dict[str, InMemorySplit | FileSplit] = {}

    @property
    def num_classes(self) -> int:
        """Read from the source once its data is there (after ``prepare_data``)."""
        return len(self.source.classes)

    def prepare_data(self) -> None:
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train = self.source.load("train")
        if "val" in self.source.splits:
            val = self.source.load("val")
        else:
            keep, held = stratified_split(train.labels, self.val_fraction, self.split_seed)
            train, val = _take(train, keep), _take(train, held)
        if len(train) < self.batch_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the {len(train)} training images, and "
                f"the last incomplete batch is dropped: use data.batch_size={len(train)} or less"
            )
        self.splits = {"train": train, "val": val}
        if "test" in self.source.splits:
            self.splits["test"] = self.source.load("test")
        if self.select_on == "test":
            if "test" not in self.splits:
                raise ValueError(f"data.select_on=test, but dataset {self.source.name!r} has no test split")
            log.warning("data.select_on=test: the best checkpoint is picked on the TEST split (the original project's flaw)")
            self.splits["val"] = self.splits["test"]
        log.info("splits: %s", ", ".join(f"{k} {len(v)}" for k, v in self.splits.items()))

    @property
    def stored_in_memory(self) -> bool:
        return isinstance(self.splits.get("train"), InMemorySplit)

    def _loader(self, split: str, train: bool):
        data = self.splits[split]
        batch_size = self.batch_size if train else self.eval_batch_size
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if isinstance(data, InMemorySplit):
            if self.in_memory_on_device:
                return self._device_loader(data, batch_size, train, rank, world)
            dataset = TensorImageDataset(data.images, data.labels)
        else:
            a = self.image_augment
            transform = file_transform(self.image_size, train, a.train_transform, a.eval_transform, a.crop_padding, a.hflip)
            dataset = FileImageDataset(data.paths, data.labels, transform)
        # training batches get Lightning's DistributedSampler; evaluation must not repeat samples
        sampler = EvalShardSampler(dataset, rank, world) if world > 1 and not train else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def _device_loader(self, data: InMemorySplit, batch_size: int, train: bool, rank: int, world: int) -> InMemoryLoader:
        """This rank's share of an in-memory split, moved once to its device and batched there."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        epoch = (lambda: trainer.current_epoch) if trainer is not None else None
        n = len(data)
        index = train_shard(n, rank, world, self.seed) if train else torch.as_tensor(eval_shard(n, rank, world))
        if world == 1:
            index = None
        images, labels = (data.images, data.labels) if index is None else (data.images[index], data.labels[index])
        batches = train_batches(n, world, batch_size) if train else None
        if batches == 0:
            raise ConfigError(f"data.batch_size={batch_size} is larger than the {n // world} training images "
                             f"each of the {world} processes holds: use data.batch_size={n // world} or less")
        # each rank shuffles its shard with a seed of its own, the same in every run
        return InMemoryLoader(images.to(device), labels.to(device), batch_size, shuffle=train, seed=self.seed + 1_000_003 * rank,
                              drop_last=train, epoch=epoch, num_batches=batches)

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        if "test" not in self.splits:
            return []
        return self._loader("test", train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        train = self.trainer is not None and self.trainer.training
        return self.transform_batch(images, train), labels

    def transform_batch(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 [B, 3, h, w] -> normalised float [B, 3, S, S] on the same device (S = side * patch
        size with mega-patches)."""
        return self.batch_transform(images, train, augment_images=self.stored_in_memory)


def _take(split: InMemorySplit | FileSplit, index: torch.Tensor) -> InMemorySplit | FileSplit:
    if isinstance(split, InMemorySplit):
        return InMemorySplit(split.images[index], split.labels[index])
    return FileSplit([split.paths[i] for i in index.tolist()], split.labels[index])
