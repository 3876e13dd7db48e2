"""Where the output is not a terminal, a run prints a progress line per epoch and at least every minute."""
import logging
import re
import sys
from types import SimpleNamespace

from relvit.runs.console import ProgressLines
from relvit.training.run import train

LINE = re.compile(r"^epoch (\d+)/(\d+)  step (\d+)/(\d+)  images/s (\d+)  ETA (\d+:\d\d:\d\d)$", re.M)


def test_a_run_into_a_file_prints_a_line_per_epoch_and_a_layer_table_without_flops(tiny_cfg, capsys, caplog,
                                                                                      monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    with caplog.at_level(logging.INFO):
        train(tiny_cfg("trainer.enable_progress_bar=true", "trainer.enable_model_summary=true", "trainer.max_epochs=2",
                       "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"))
    (table,) = [r.getMessage() for r in caplog.records if "Total params" in r.getMessage()]
    assert "backbone" in table and "Params" in table and "FLOPs" not in table and "Flops" not in table
    lines = LINE.findall(capsys.readouterr().out)
    assert [(epoch, epochs, step, steps) for epoch, epochs, step, steps, _, _ in lines] == [
        ("1", "2", "3", "6"), ("2", "2", "6", "6")]
    assert int(lines[0][4]) > 0 and lines[-1][5] == "0:00:00"  # images/s measured, nothing left at the end


def test_a_line_at_least_every_minute_within_an_epoch(capsys):
    now = [0.0]
    lines = ProgressLines(every_s=60, clock=lambda: now[0])
    trainer = SimpleNamespace(global_step=0, world_size=2, current_epoch=0, max_epochs=3, estimated_stepping_batches=30,
                              is_global_zero=True, sanity_checking=False)
    lines.on_train_start(trainer, None)
    for _ in range(5):  # 25 s a step, 400 images a rank
        now[0] += 25
        trainer.global_step += 1
        lines.on_train_batch_end(trainer, None, None, (list(range(400)), None), 0)
    out = capsys.readouterr().out.splitlines()
    # after 75 s: 3 steps of 800 images, 25 s a step for the 27 to come; the next is due 60 s later
    assert out == ["epoch 1/3  step 3/30  images/s 32  ETA 0:11:15"]
    lines.on_validation_epoch_start(trainer, None)
    now[0] += 100  # validation: no images trained, left out of images/s
    lines.on_validation_epoch_end(trainer, None)
    lines.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out.splitlines() == ["epoch 1/3  step 5/30  images/s 32  ETA 0:18:45"]
