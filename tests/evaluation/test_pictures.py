"""The embedding pictures: readable, coloured, and written only where they change."""
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from relvit.evaluation.pictures import MIN_SIDE, colour_map, position_similarity_grid
from relvit.training.run import train


def images(run_dir):
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    return {tag: events.Images(tag) for tag in events.Tags()["images"]}


def test_colour_map_spans_viridis():
    rgb = colour_map(torch.tensor([0.0, 1.0]))
    assert rgb.shape == (3, 2)
    assert torch.allclose(rgb[:, 0], torch.tensor([68, 1, 84]) / 255) and torch.allclose(rgb[:, 1], torch.tensor([253, 231, 37]) / 255)


def test_similarity_picture_is_readable_and_coloured():
    image = position_similarity_grid(torch.randn(16, 8), side=4)
    assert image.shape[0] == 3 and min(image.shape[1:]) >= MIN_SIDE
    assert not torch.equal(image[0], image[1])  # a colour map, not grey


def test_joint_writes_the_position_similarity_at_a_readable_size(tiny_cfg, tmp_path):
    train(tiny_cfg("task=joint", "trainer.max_epochs=2"))
    written = images(tmp_path / "run")
    assert len(written["embeddings/position_similarity"]) == 2  # it changed in each epoch
    assert min(written["embeddings/position_similarity"][0].width, written["embeddings/position_similarity"][0].height) >= MIN_SIDE


def test_unchanged_pictures_are_written_once(tiny_cfg, tmp_path):
    # a linear probe: the backbone, and so its filters and position embeddings, never change
    train(tiny_cfg("task=downstream", "task.freeze_backbone=true", "trainer.max_epochs=3"))
    written = images(tmp_path / "run")
    assert len(written["embeddings/patch_filters"]) == 1
    assert len(written["embeddings/position_similarity"]) == 1
