"""The kNN monitor of pre-training and the two-phase run's kNN line."""
import json
import re

from conftest import TINY


def test_two_phase_run_logs_knn_and_prints_pretrained_next_to_random(cli, tmp_path):
    code, out, err = cli("train.py", *TINY, "task=upstream", 'finetune=["task=downstream"]',
                         f"paths.log_dir={tmp_path / 'outputs'}")
    assert code == 0, err[-3000:]
    (pretrain,) = (tmp_path / "outputs" / "upstream" / "runs").iterdir()
    val = json.loads((pretrain / "metrics.json").read_text())["val"]
    assert 0.0 <= val["val/knn_acc"] <= 1.0  # the monitor ran when the best checkpoint was judged
    assert "val/knn_acc" not in json.loads((pretrain / "finetune" / "metrics.json").read_text())["val"]
    line = re.search(r"kNN accuracy \(test, .*\): pre-trained encoder (\S+), randomly initialised encoder (\S+)", out)
    assert line, out[-2000:]
    assert out.index("final test accuracy") < line.start()  # printed after the fine-tuning's result
    assert all(0.0 <= float(v.rstrip(",")) <= 1.0 for v in line.groups())
