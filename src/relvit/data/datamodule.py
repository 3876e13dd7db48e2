"""One LightningDataModule for every dataset: splits, loaders, and the on-device batch pipeline."""
from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from relvit.data.batch_transform import BatchTransform
from relvit.data.encoded import (
    EncodedBatch,
    EncodedImageDataset,
    collate_encoded,
    decode_batch,
    decodes_on_device,
    without_pil_step,
)
from relvit.data.image_augment import BatchImageAugment
from relvit.data.loaders import (
    EpochBatches,
    FileImageDataset,
    InMemoryLoader,
    StreamedLoader,
    TensorImageDataset,
    file_transform,
)
from relvit.data.sources.base import DataSource, FileSplit, InMemorySplit
from relvit.data.splits import LabelBudget, stratified_split
from relvit.data.verify import describe_bad, find_bad_images
from relvit.errors import ConfigError
from relvit.runs.distributed import EvalShardSampler, eval_shard, train_batches, train_shard

log = logging.getLogger(__name__)

MODEL_SELECTION_SPLITS = ("val", "test")


def pins_memory(requested: bool) -> bool:
    """Whether the file loaders pin their batches (``data.pin_memory``): only where a CUDA device can
    copy from pinned memory, which also lets Lightning's non-blocking copies overlap the step."""
    return bool(requested) and torch.cuda.is_available()


class RelViTDataModule(L.LightningDataModule):
    """Serves train / val / test batches of uint8 images and turns them, on the model's device, into
    normalised float batches: image-level augmentation for in-memory data, the task's mega-patch
    tiling (every split), its per-patch augmentation (training only), per-channel normalisation.

    A validation split is held out of the training data (stratified, fixed seed) when the source
    has none. ``select_on: test`` makes the "val" loader serve the test split instead and trains on
    the whole training split: the original project's model selection on the test set, kept only to
    reproduce its numbers.
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
        test_fraction: float = 0.0,
        split_seed: int = 0,
        select_on: str = "val",
        drop_last: bool = True,
        in_memory_on_device: bool = True,
        patch_augment: torch.nn.Module | None = None,
        megapatch: torch.nn.Module | None = None,
        seed: int = 0,
        on_bad_image: str = "error",
        decode: str = "auto",
        labels_per_class: int | None = None,
        label_fraction: float | None = None,
        label_seed: int = 0,
        restrict_labels: bool = True,
    ):
        super().__init__()
        self.source = source
        self.image_size = image_size
        self.image_augment = BatchImageAugment(image_size, train_transform, eval_transform, crop_padding, hflip)
        self.batch_transform = BatchTransform(self.image_augment, mean, std, patch_augment, megapatch)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.select_on = select_on
        self.drop_last = drop_last
        self.in_memory_on_device = in_memory_on_device
        self.seed = seed
        self.on_bad_image = on_bad_image
        self.decode = decode
        # transforms of the batches decoded on the device, by train (True) or evaluation (False)
        self.device_transforms: dict[bool, v2.Compose] = {}
        self.label_budget = LabelBudget(labels_per_class, label_fraction, label_seed) if restrict_labels else None
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
        train = self._checked("train", self.source.load("train"))
        held_test = None
        if self.test_fraction > 0 and "test" not in self.source.splits:
            # a fixed test split, held out before the validation split and the label budget touch the rest
            keep, held = stratified_split(train.labels, self.test_fraction, self.split_seed + 1)
            train, held_test = _take(train, keep), _take(train, held)
        if "val" in self.source.splits:
            val = self._checked("val", self.source.load("val"))
        elif self.select_on == "test":
            val = None  # replaced by the test split below: nothing is held out
        else:
            keep, held = stratified_split(train.labels, self.val_fraction, self.split_seed)
            train, val = _take(train, keep), _take(train, held)
        if self.label_budget is not None and self.label_budget.active:
            train = _take(train, self.label_budget.select(train.labels))
            if len(train) < self.batch_size:
                # the budget, not the user's batch size, made the set small: one batch holds it all
                log.info("few labels: data.batch_size %d -> %d, the labelled training images", self.batch_size, len(train))
                self.batch_size = len(train)
        if len(train) < self.batch_size and self.drop_last:
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the {len(train)} training images, and "
                f"the last incomplete batch is dropped: use data.batch_size={len(train)} or less"
            )
        if val is not None and len(val) == 0:
            raise ValueError(
                f"the validation split is empty ({len(train)} training images, data.val_fraction={self.val_fraction} "
                "holds one image out only from classes with two or more): add images or give the dataset a val/ folder"
            )
        self.splits = {"train": train} if val is None else {"train": train, "val": val}
        if "test" in self.source.splits:
            self.splits["test"] = self._checked("test", self.source.load("test"))
        elif held_test is not None:
            self.splits["test"] = held_test
        # evaluation splits in a fixed mixed order: sources list files class by class, and a partial
        # evaluation (trainer.limit_val_batches) should still see every class
        for name in ("val", "test"):
            if self.splits.get(name) is not None:
                order = torch.randperm(len(self.splits[name]), generator=torch.Generator().manual_seed(self.split_seed))
                self.splits[name] = _take(self.splits[name], order)
        if self.select_on == "test":
            if "test" not in self.splits:
                raise ValueError(f"data.select_on=test, but dataset {self.source.name!r} has no test split")
            log.warning("data.select_on=test: the best checkpoint is picked on the TEST split and no validation "
                        "split is held out (the original project's flaw)")
            self.splits["val"] = self.splits["test"]
        log.info("splits: %s", ", ".join(f"{k} {len(v)}" for k, v in self.splits.items()))

    def _checked(self, split: str, data: InMemorySplit | FileSplit) -> InMemorySplit | FileSplit:
        """``data`` with its image files verified (data.on_bad_image decides what a bad file does)."""
        if len(data) == 0:
            raise ValueError(f"the {split} split is empty")
        if not isinstance(data, FileSplit):
            return data
        bad = find_bad_images(data.paths)
        if not bad:
            return data
        if self.on_bad_image == "error":
            raise ValueError(
                f"{len(bad)} of the {len(data)} {split} image files cannot be decoded:\n{describe_bad(data.paths, bad)}\n"
                "Remove or replace them, or set data.on_bad_image=skip to leave them out"
            )
        log.warning("data.on_bad_image=skip: leaving out %d bad %s image files:\n%s", len(bad), split, describe_bad(data.paths, bad))
        keep = torch.tensor([i for i in range(len(data)) if i not in bad], dtype=torch.long)
        kept = _take(data, keep)
        if len(kept) == 0:
            raise ValueError(f"every {split} image file is bad: nothing is left to train or evaluate on")
        return kept

    @property
    def stored_in_memory(self) -> bool:
        return isinstance(self.splits.get("train"), InMemorySplit)

    def _loader(self, split: str, train: bool):
        data = self.splits[split]
        collate = None
        batch_size = self.batch_size if train else self.eval_batch_size
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        dataset: TensorImageDataset | FileImageDataset | EncodedImageDataset
        if isinstance(data, InMemorySplit):
            if self.in_memory_on_device:
                return self._device_loader(data, batch_size, train, rank, world)
            dataset = TensorImageDataset(data.images, data.labels)
        else:
            a = self.image_augment
            transform = file_transform(self.image_size, train, a.train_transform, a.eval_transform, a.crop_padding, a.hflip)
            device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
            if decodes_on_device(self.decode, device, data.paths):
                dataset = EncodedImageDataset(data.paths, data.labels)
                # both: a training batch may also be shown as validation sees it (the online probe)
                for mode in (True, False):
                    self.device_transforms[mode] = without_pil_step(
                        file_transform(self.image_size, mode, a.train_transform, a.eval_transform, a.crop_padding, a.hflip))
                collate = collate_encoded
            else:
                dataset = FileImageDataset(data.paths, data.labels, transform, seed=self.seed)
        if train:
            return self._streamed_train_loader(dataset, len(data), batch_size, rank, world, collate)
        # evaluation must not repeat samples
        sampler = EvalShardSampler(dataset, rank, world) if world > 1 else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=pins_memory(self.pin_memory),
            persistent_workers=self.num_workers > 0,
            collate_fn=collate,
            generator=self._worker_seeds(),
        )

    def _worker_seeds(self) -> torch.Generator:
        """A DataLoader's own generator: its workers' base seed is drawn from it, not from the run's
        random stream (which a resumed run would otherwise see drawn at other moments: the first
        validation after a resume makes its workers anew)."""
        return torch.Generator().manual_seed(self.seed)

    def _streamed_train_loader(self, dataset, n: int, batch_size: int, rank: int, world: int, collate) -> StreamedLoader:
        """Training batches decoded by workers, cut and ordered as ``_device_loader`` cuts and orders
        in-memory ones (this rank's shard, the same batch count on every rank, an order of the seed,
        rank and epoch, starting at the trainer's position in the epoch): a run resumed mid-epoch goes on
        with the batches, and the per-image augmentation, of the uninterrupted run."""
        trainer = self.trainer
        indices = train_shard(n, rank, world, self.seed) if world > 1 else torch.arange(n)
        num_batches = train_batches(n, world, batch_size) if world > 1 else None
        if num_batches == 0:
            raise ConfigError(f"data.batch_size={batch_size} is larger than the {n // world} training images "
                              f"each of the {world} processes holds: use data.batch_size={n // world} or less")
        epoch = (lambda: trainer.current_epoch) if trainer is not None else None
        position = None
        if trainer is not None:
            position = lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed  # type: ignore[attr-defined]  # noqa: E731
        batches = EpochBatches(indices, batch_size, seed=self.seed + 1_000_003 * rank, drop_last=self.drop_last,
                               epoch=epoch, position=position, num_batches=num_batches)
        return StreamedLoader(DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            pin_memory=pins_memory(self.pin_memory),
            persistent_workers=self.num_workers > 0,
            collate_fn=collate,
            generator=self._worker_seeds(),
        ))

    def _device_loader(self, data: InMemorySplit, batch_size: int, train: bool, rank: int, world: int) -> InMemoryLoader:
        """This rank's share of an in-memory split, moved once to its device and batched there."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        epoch = (lambda: trainer.current_epoch) if trainer is not None else None
        n = len(data)
        index: torch.Tensor | None = train_shard(n, rank, world, self.seed) if train else torch.as_tensor(eval_shard(n, rank, world))
        if world == 1:
            index = None
        images, labels = (data.images, data.labels) if index is None else (data.images[index], data.labels[index])
        batches = train_batches(n, world, batch_size) if train and world > 1 else None
        if batches == 0:
            raise ConfigError(f"data.batch_size={batch_size} is larger than the {n // world} training images "
                             f"each of the {world} processes holds: use data.batch_size={n // world} or less")
        # each rank shuffles its shard with a seed of its own, the same in every run; a training epoch
        # starts at the batches of it the trainer has taken (restored from a checkpoint on resume)
        position = None
        if train and trainer is not None:
            position = lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed  # type: ignore[attr-defined]  # noqa: E731
        return InMemoryLoader(images.to(device), labels.to(device), batch_size, shuffle=train, seed=self.seed + 1_000_003 * rank,
                              drop_last=train and self.drop_last, epoch=epoch, num_batches=batches, position=position)

    def eval_loader(self, split: str, device: torch.device | str = "cpu", shard: tuple[int, int] = (0, 1)):
        """Un-augmented batches of ``split`` (``train`` included) for feature extraction, in a fixed
        order: uint8 images [B, 3, H, W] and labels [B]; of the whole split, or of the contiguous
        ``eval_shard`` of process ``shard[0]`` out of ``shard[1]``."""
        data = self.splits[split]
        rows = eval_shard(len(data.labels), *shard)
        if isinstance(data, InMemorySplit):
            images, labels = data.images[rows.start:rows.stop], data.labels[rows.start:rows.stop]
            return InMemoryLoader(images.to(device), labels.to(device), self.eval_batch_size, shuffle=False)
        a = self.image_augment
        transform = file_transform(self.image_size, False, a.train_transform, a.eval_transform, a.crop_padding, a.hflip)
        paths, labels = list(data.paths)[rows.start:rows.stop], data.labels[rows.start:rows.stop]
        return DataLoader(FileImageDataset(paths, labels, transform), batch_size=self.eval_batch_size,
                          num_workers=self.num_workers, pin_memory=pins_memory(self.pin_memory),
                          generator=self._worker_seeds())

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
        if train and self.trainer is not None and getattr(self.trainer.lightning_module, "wants_clean_view", False):
            # the online probe learns from the images as validation shows them: no augmentation
            return (self.transform_batch(images, True, labels.device), labels,
                    self.transform_batch(images, False, labels.device))
        return self.transform_batch(images, train, labels.device), labels

    def transform_batch(self, images: torch.Tensor | EncodedBatch, train: bool,
                        device: torch.device | None = None) -> torch.Tensor:
        """uint8 [B, 3, h, w] (or encoded JPEG files, decoded on ``device``) -> normalised float
        [B, 3, S, S] on the same device (S = side * patch size with mega-patches)."""
        if isinstance(images, EncodedBatch):
            decoded = decode_batch(images, device or torch.device("cpu"), self.device_transforms[train])
            return self.batch_transform(decoded, train, augment_images=False)
        return self.batch_transform(images, train, augment_images=self.stored_in_memory)


def _take(split: InMemorySplit | FileSplit, index: torch.Tensor) -> InMemorySplit | FileSplit:
    if isinstance(split, InMemorySplit):
        return InMemorySplit(split.images[index], split.labels[index])
    return FileSplit([split.paths[i] for i in index.tolist()], split.labels[index])

