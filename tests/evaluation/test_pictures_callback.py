"""Pictures at validation go to TensorBoard."""
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY


def test_validation_writes_the_pictures_to_tensorboard(cli, tmp_path):
    code, _, err = cli("train.py", *TINY, "task=joint", "callbacks.pictures.every_n_epochs=1",
                       f"paths.output_dir={tmp_path / 'run'}")
    assert code == 0, err[-3000:]
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"pictures/cls_attention", "pictures/relations", "pictures/positions"} <= set(events.Tags()["images"])
