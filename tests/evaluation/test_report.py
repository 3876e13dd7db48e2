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


def test_evaluate_runs_the_frozen_protocols_and_refuses_an_unknown_one(cli, tmp_path):
    code, _, err = cli("train.py", *TINY, "task=upstream", f"paths.output_dir={tmp_path / 'run'}")
    assert code == 0, err[-3000:]
    ckpt = f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'best.ckpt'}"
    for protocol, names in (("knn", {"knn_acc_cls", "knn_acc_mean"}), ("linear", {"linear_acc_cls", "linear_acc_mean"})):
        out_dir = tmp_path / f"eval_{protocol}"
        code, _, err = cli("evaluate.py", ckpt, f"protocol={protocol}", "linear.steps=20", f"paths.output_dir={out_dir}")
        assert code == 0, err[-3000:]
        metrics = json.loads((out_dir / "metrics.json").read_text())
        assert metrics["protocol"] == protocol
        for split in ("val", "test"):
            assert {f"{split}/{n}" for n in names} <= set(metrics[split])
            assert all(0.0 <= metrics[split][f"{split}/{n}"] <= 1.0 for n in names)
    code, _, err = cli("evaluate.py", ckpt, "protocol=svm", f"paths.output_dir={tmp_path / 'bad'}")
    assert code == 2 and "protocol='svm' is invalid" in err
