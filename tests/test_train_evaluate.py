"""End to end on the embedded digits with a tiny ViT: train, warm-start, evaluate, repeat."""
import json
import subprocess
import sys

import pytest
import torch

from relvit.config.checks import ConfigError, check_config
from relvit.evaluation.evaluate import evaluate
from relvit.runs.checkpoints import UnsafeCheckpointError, load_pretrained, read_checkpoint, state_dict_of
from relvit.runs.files import OutputDirError
from relvit.runs.saved_config import resume_config
from relvit.training.run import build, train

from conftest import REPO, TINY, compose_config, subprocess_env


@pytest.fixture(scope="module")
def upstream_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("up")
    cfg = compose_config(tmp, [*TINY, "task=upstream"])
    return tmp, cfg, train(cfg)


def test_a_run_writes_its_outputs(upstream_run):
    tmp, cfg, summary = upstream_run
    out = tmp / "run"
    assert (out / "checkpoints" / "best.ckpt").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "config.yaml").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    written = json.loads((out / "metrics.json").read_text())
    assert written["task"] == "upstream"
    assert {"val/rel_acc", "val/pos_acc", "val/loss"} <= set(written["val"])
    assert {"test/rel_acc", "test/loss"} <= set(written["test"])
    assert summary["val"] == written["val"]


def test_validation_writes_embedding_images(upstream_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp, _, _ = upstream_run
    events = EventAccumulator(str(tmp / "run" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    # upstream adds no position embeddings: their similarity would be a picture of the initialisation
    assert "embeddings/patch_filters" in tags and "embeddings/position_similarity" not in tags
    scalars = events.Tags()["scalars"]
    assert "val/rel_acc" in scalars and any(t.startswith("lr-") for t in scalars)


def test_checkpoints_load_without_code_and_hold_the_config(upstream_run):
    tmp, _, _ = upstream_run
    content = read_checkpoint(tmp / "run" / "checkpoints" / "best.ckpt")
    assert content["relvit_config"]["task"]["name"] == "upstream"


def test_downstream_carries_the_upstream_backbone(upstream_run, tiny_cfg):
    tmp, _, summary = upstream_run
    best = summary["best_checkpoint"]
    run = build(tiny_cfg("task=downstream"))
    report = load_pretrained(run.module, best)
    saved = state_dict_of(read_checkpoint(best))
    own = run.module.state_dict()
    backbone_keys = [k for k in saved if k.startswith("backbone.")]
    assert backbone_keys and all(torch.equal(own[k], saved[k]) for k in backbone_keys)
    assert set(backbone_keys) <= set(report.loaded)
    assert any(k.startswith("relation_head.") for k in report.unexpected)  # a head downstream lacks
    assert any(k.startswith("classifier.") for k in report.missing)


def test_another_grid_is_resampled_and_reported(upstream_run, tiny_cfg):
    _, _, summary = upstream_run
    run = build(tiny_cfg("task=downstream", "dataset.image_size=24"))  # 6 x 6 grid: new pos_embed shape
    report = load_pretrained(run.module, summary["best_checkpoint"])
    assert report.resampled == ["backbone.vit.pos_embed (1, 17, 36) -> (1, 37, 36)"] and not report.shape_mismatch
    assert {"backbone.vit.pos_embed", "backbone.vit.blocks.0.attn.qkv.weight"} <= set(report.loaded)


def test_evaluate_reproduces_the_training_metrics(upstream_run, tmp_path):
    _, _, summary = upstream_run
    cfg = compose_config(tmp_path, [f"ckpt_path={summary['best_checkpoint']}"], config_name="evaluate")
    result = evaluate(cfg, overrides=[])
    for split in ("val", "test"):
        for key, value in summary[split].items():
            if "knn" not in key:  # the kNN monitor's figures: evaluate.py protocol=knn measures them
                assert result[split][key] == pytest.approx(value, abs=1e-6), key
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"] == result["test"]


def test_same_seed_same_metrics(tiny_cfg):
    first = train(tiny_cfg("task=joint", output="a"))
    second = train(tiny_cfg("task=joint", output="b"))
    assert first["val"] == second["val"] and first["test"] == second["test"]


def test_a_run_never_writes_into_another_runs_dir(upstream_run):
    tmp, cfg, _ = upstream_run
    before = (tmp / "run" / "metrics.json").read_text()
    with pytest.raises(OutputDirError, match="already holds a run"):
        train(cfg)
    assert (tmp / "run" / "metrics.json").read_text() == before


def test_bad_values_are_named(tiny_cfg):
    with pytest.raises(ConfigError, match=r"dataset\.patch_size=5 .*multiple"):
        check_config(tiny_cfg("dataset.patch_size=5"))
    with pytest.raises(ConfigError, match=r"optimizer\.lr=-1"):
        check_config(tiny_cfg("optimizer.lr=-1"))
    with pytest.raises(ConfigError, match=r"task.*monitor_mode"):
        check_config(tiny_cfg("task.monitor_mode=up"))
    with pytest.raises(ConfigError, match=r"pretrained="):
        check_config(tiny_cfg("pretrained=/no/such/file.ckpt"))
    with pytest.raises(ConfigError, match=r"data\.batch_size=5000 is larger than the 1295 training images"):
        build(tiny_cfg("data.batch_size=5000"))



def test_constructor_errors_name_the_key_the_user_sets(tiny_cfg):
    with pytest.raises(ConfigError, match=r"^task\.patch_augment: .*'colJit:0\.8'.*colJitter"):
        build(tiny_cfg("task.patch_augment.ops=colJit:0.8"))
    with pytest.raises(ConfigError, match=r"^backbone: attention_mask must be one of"):
        build(tiny_cfg("backbone.attention_mask=full"))


def test_patch_grid_must_match_the_backbone_token_grid(tmp_path):
    cfg = compose_config(tmp_path, ["backbone=swin_tiny", "dataset.image_size=64", "dataset.patch_size=8"])
    with pytest.raises(ConfigError, match=r"dataset\.patch_size=8 .*8 x 8 patches.*token grid is 2 x 2; use dataset\.patch_size=32"):
        build(cfg)
    cfg = compose_config(tmp_path, ["backbone=swin_tiny"])  # 16 px digits
    with pytest.raises(ConfigError, match=r"^dataset\.image_size=16 is invalid: Swin with 4 stages .*divisible by 32"):
        check_config(cfg)


def test_code_bearing_checkpoints_are_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": ConfigError("not a tensor")}, path)
    with pytest.raises(UnsafeCheckpointError, match="arbitrary code"):
        read_checkpoint(path)


def run_cli(script, *args, cwd):
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=subprocess_env())


def test_cli_reports_a_bad_value_in_one_line(tmp_path):
    done = run_cli("train.py", "dataset.patch_size=5", cwd=tmp_path)
    assert done.returncode == 2
    assert "dataset.patch_size=5" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "outputs" / "upstream" / "runs").exists() or not list((tmp_path / "outputs").rglob("*.ckpt"))


def test_cli_lists_valid_options_of_a_group(tmp_path):
    done = run_cli("train.py", "backbone=vit_huge", cwd=tmp_path)
    assert done.returncode != 0
    assert "vit_small" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow  # the README test runs the same command (experiment=quickstart) in the default suite
def test_cli_two_phase_recipe_prints_test_accuracy(tmp_path):
    tiny = [o for o in TINY if not o.startswith("backbone=")]
    done = run_cli("train.py", "experiment=quickstart", *tiny, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "final test accuracy:" in done.stdout
    (run_dir,) = list((tmp_path / "outputs" / "upstream" / "runs").iterdir())
    up = json.loads((run_dir / "metrics.json").read_text())
    down = json.loads((run_dir / "finetune" / "metrics.json").read_text())
    assert up["task"] == "upstream" and down["task"] == "downstream"
    assert "test/acc" in down["test"]
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_resume_continues_an_interrupted_run_in_a_new_dir(upstream_run, tiny_cfg):
    tmp, _, _ = upstream_run
    last = tmp / "run" / "checkpoints" / "last.ckpt"
    first = read_checkpoint(last)
    before = last.read_bytes()
    cfg = tiny_cfg("task=upstream", f"resume={last}", "trainer.max_epochs=2", output="resumed")
    summary = train(cfg)
    resumed = read_checkpoint(summary["output_dir"] + "/checkpoints/last.ckpt")
    assert first["epoch"] == 0 and resumed["epoch"] == 1
    assert resumed["global_step"] == 2 * first["global_step"]  # one more epoch on top of the first
    assert last.read_bytes() == before  # the interrupted run is untouched
    with pytest.raises(ConfigError, match="pretrained"):
        resume_config(tiny_cfg(f"resume={last}", f"pretrained={last}"), [])


def test_the_final_table_marks_a_metric_a_split_does_not_measure():
    from relvit.training.run import format_table

    table = format_table({"val": {"val/loss": 1.0, "val/knn_acc": 0.5}, "test": {"test/loss": 2.0}}).splitlines()
    assert [row.split() for row in table] == [["metric", "val", "test"], ["knn_acc", "0.5000", "-"],
                                              ["loss", "1.0000", "2.0000"]]
