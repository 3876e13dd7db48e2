"""Image files streamed by DataLoader workers resume mid-epoch exactly: an epoch's batches are cut and
ordered from the seed, rank and epoch (as the in-memory loader's), start at the trainer's position,
and each image's random augmentation comes from (seed, epoch, index), not from the worker's stream."""
from types import SimpleNamespace

import pytest
import torch

from relvit.data.loaders import InMemoryLoader, StreamedLoader, draw_seed
from relvit.runs.distributed import train_batches

from conftest import write_jpeg_folder


class FakeTrainer:
    """What the data module reads of a trainer: rank, world, device, epoch, batches of the epoch taken."""

    def __init__(self, epoch: int = 0, processed: int = 0, rank: int = 0, world: int = 1):
        self.global_rank, self.world_size, self.current_epoch = rank, world, epoch
        self.strategy = SimpleNamespace(root_device=torch.device("cpu"))
        current = SimpleNamespace(processed=processed)
        self.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(current=current)))


@pytest.fixture
def folder_module(tiny_cfg, tmp_path):
    """A data module of 60 small JPEG files (random resized crops and flips, decoded with PIL)."""
    from relvit.training.run import build

    root = tmp_path / "images"
    write_jpeg_folder(root / "train", per_class=30)

    def make(num_workers: int):
        cfg = tiny_cfg("task=upstream", "dataset=image_folder", f"dataset.root={root}", "dataset.image_size=16",
                       "dataset.patch_size=4", "data.batch_size=8", f"data.num_workers={num_workers}")
        return build(cfg).datamodule

    return make


def batches_of(dm, trainer: FakeTrainer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    dm.trainer = trainer
    try:
        loader = dm.train_dataloader()
        assert isinstance(loader, InMemoryLoader if dm.stored_in_memory and dm.in_memory_on_device else StreamedLoader)
        return list(loader)
    finally:
        dm.trainer = None


def test_a_streamed_epoch_resumed_at_any_batch_goes_on_with_the_uninterrupted_batches(folder_module):
    two_workers, in_process = folder_module(2), folder_module(0)
    whole = batches_of(two_workers, FakeTrainer(epoch=1))
    assert len(whole) == len(two_workers.splits["train"]) // 8
    before = torch.get_rng_state()
    alone = batches_of(in_process, FakeTrainer(epoch=1))
    assert torch.equal(torch.get_rng_state(), before)  # the seeded draws leave the run's own stream alone
    # the same images, crops and flips whichever process decodes them and whatever it decoded before
    for (a, la), (b, lb) in zip(whole, alone, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    for start in (1, 3):
        resumed = batches_of(two_workers, FakeTrainer(epoch=1, processed=start))
        assert len(resumed) == len(whole) - start
        for (a, la), (b, lb) in zip(resumed, whole[start:], strict=True):
            assert torch.equal(a, b) and torch.equal(la, lb)
    other_epoch = batches_of(two_workers, FakeTrainer(epoch=2))
    assert not torch.equal(other_epoch[0][0], whole[0][0])


def test_an_image_draws_other_augmentations_in_other_epochs_and_sequences_differ():
    seeds = {draw_seed(0, epoch, index) for epoch in range(4) for index in range(500)}
    assert len(seeds) == 2000 and all(0 <= s < 2**32 for s in seeds)
    assert draw_seed(1, 0, 0) != draw_seed(0, 0, 0)


@pytest.mark.parametrize("world", [1, 2])
def test_streamed_in_memory_data_gets_the_in_memory_loaders_batches(tiny_cfg, world):
    """data.in_memory_on_device=false streams what the in-memory loader slices, rank by rank."""
    from relvit.training.run import build

    streamed = build(tiny_cfg("task=joint", "data.in_memory_on_device=false", "data.num_workers=0")).datamodule
    on_device = build(tiny_cfg("task=joint")).datamodule
    counts = []
    for rank in range(world):
        trainer = FakeTrainer(epoch=3, processed=1, rank=rank, world=world)
        expected = batches_of(on_device, trainer)
        served = batches_of(streamed, trainer)
        assert len(served) == len(expected) > 0
        for (a, la), (b, lb) in zip(served, expected, strict=True):
            assert torch.equal(a, b) and torch.equal(la, lb)
        counts.append(len(served))
    if world == 2:  # every rank steps equally often
        n = len(streamed.splits["train"])
        assert counts == [train_batches(n, 2, streamed.batch_size) - 1] * 2
