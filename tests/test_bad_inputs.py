"""Every bad input ends before work with one line naming the key or file, exit code 2, no traceback."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import TINY

FAST = [o for o in TINY if not o.startswith("trainer.max_epochs")] + ["trainer.max_epochs=1"]


def files(tmp: Path) -> dict[str, Path]:
    """Damaged and foreign checkpoint files, made once per test directory."""
    out = {}
    good = tmp / "good.ckpt"
    torch.save({"state_dict": {"backbone.x": torch.zeros(2)}}, good)
    raw = good.read_bytes()
    for name, data in (("empty.ckpt", b""), ("truncated.ckpt", raw[: len(raw) // 2]), ("garbage.ckpt", bytes(range(256)) * 16),
                       ("text.ckpt", b"hello, not a checkpoint\n")):
        (tmp / name).write_bytes(data)
        out[name.removesuffix(".ckpt")] = tmp / name
    # like old checkpoints that pickled their argparse arguments: rebuilding it means importing code
    torch.save({"state_dict": {"backbone.x": torch.zeros(2)}, "args": argparse.Namespace(lr=1)}, tmp / "unsafe.ckpt")
    out["unsafe"] = tmp / "unsafe.ckpt"
    torch.save({"state_dict": {"backbone.x": torch.zeros(2)}}, tmp / "norun.ckpt")
    out["norun"] = tmp / "norun.ckpt"
    (tmp / "afile").write_text("a file, not a folder")
    out["afile"] = tmp / "afile"
    return out


def image_folder(tmp: Path, per_class: int, bad: str | None = None) -> Path:
    root = tmp / f"images_{per_class}_{bad}"
    for c in ("a", "b"):
        folder = root / "train" / c
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (16, 16), (40 * i % 255, 80, 120)).save(folder / f"{i}.png")
    if bad == "truncated":
        data = (root / "train" / "a" / "0.png").read_bytes()
        (root / "train" / "a" / "0.png").write_bytes(data[: len(data) // 2])
    elif bad == "not_an_image":
        (root / "train" / "b" / "notes.jpg").write_text("not an image")
    return root


# (id, script, overrides (may name {file}s), the start of the message on stderr)
CASES = [
    ("lr_text", "train.py", ["optimizer.lr=abc"], "error: optimizer.lr='abc' is invalid: a number > 0"),
    ("lr_inf", "train.py", ["optimizer.lr=inf"], "error: optimizer.lr=inf is invalid"),
    ("lr_nan", "train.py", ["optimizer.lr=nan"], "error: optimizer.lr=nan is invalid"),
    ("lr_negative", "train.py", ["optimizer.lr=-1"], "error: optimizer.lr=-1 is invalid"),
    ("lr_zero", "train.py", ["optimizer.lr=0"], "error: optimizer.lr=0 is invalid"),
    ("weight_decay", "train.py", ["optimizer.weight_decay=-0.1"], "error: optimizer.weight_decay=-0.1 is invalid"),
    ("seed_text", "train.py", ["seed=abc"], "error: seed='abc' is invalid: an integer"),
    ("seed_negative", "train.py", ["seed=-1"], "error: seed=-1 is invalid"),
    ("seed_float", "train.py", ["seed=1.5"], "error: seed=1.5 is invalid"),
    ("batch_zero", "train.py", ["data.batch_size=0"], "error: data.batch_size=0 is invalid"),
    ("batch_negative", "train.py", ["data.batch_size=-5"], "error: data.batch_size=-5 is invalid"),
    ("batch_text", "train.py", ["data.batch_size=big"], "error: data.batch_size='big' is invalid"),
    ("batch_too_large", "train.py", ["data.batch_size=5000"], "error: dataset 'digits': data.batch_size=5000 is larger"),
    ("eval_batch_zero", "train.py", ["data.eval_batch_size=0"], "error: data.eval_batch_size=0 is invalid"),
    ("eval_batch_negative", "train.py", ["data.eval_batch_size=-5"], "error: data.eval_batch_size=-5 is invalid"),
    ("workers_negative", "train.py", ["data.num_workers=-1"], "error: data.num_workers=-1 is invalid"),
    ("clip_negative", "train.py", ["trainer.gradient_clip_val=-1"], "error: trainer.gradient_clip_val=-1 is invalid"),
    ("clip_nan", "train.py", ["trainer.gradient_clip_val=nan"], "error: trainer.gradient_clip_val=nan is invalid"),
    ("epochs_zero", "train.py", ["trainer.max_epochs=0"], "error: trainer.max_epochs=0 is invalid"),
    ("val_fraction", "train.py", ["data.val_fraction=1.5"], "error: data.val_fraction=1.5 is invalid"),
    ("patch_size", "train.py", ["dataset.patch_size=5"], "error: dataset.patch_size=5 is invalid"),
    ("image_size", "train.py", ["dataset.image_size=0"], "error: dataset.image_size=0 is invalid"),
    ("drop_rate", "train.py", ["backbone.drop_rate=1.5"], "error: backbone.drop_rate=1.5 is invalid"),
    ("num_heads", "train.py", ["backbone.num_heads=5"], "error: backbone.num_heads=5 is invalid"),
    ("warmup", "train.py", ["scheduler.warmup_fraction=1.0"], "error: scheduler.warmup_fraction=1.0 is invalid"),
    ("megapatch_side", "train.py", ["task=megapatch", "task.megapatch.side=9"], "error: task.megapatch.side=9 is invalid"),
    ("monitor_mode", "train.py", ["task.monitor_mode=up"], "error: task.monitor_mode='up' is invalid: one of min, max"),
    ("probe_steps", "train.py", ["task=upstream", "task.probe_steps=0"], "error: task.probe_steps=0 is invalid: an integer >= 1"),
    ("probe_lr", "train.py", ["task=upstream", "task.probe_lr=-0.1"], "error: task.probe_lr=-0.1 is invalid: a number > 0"),
    ("bad_image_policy", "train.py", ["data.on_bad_image=ignore"], "error: data.on_bad_image='ignore' is invalid: one of error, skip"),
    ("unknown_group_option", "train.py", ["backbone=vit_huge"], "In 'train': Could not find 'backbone/vit_huge'"),
    ("unknown_task_key", "train.py", ["task.relatons=true"], "error: task.relatons is not a key of the task group; valid keys: name, supervised, relations,"),
    ("added_task_key", "train.py", ["+task.relatons=true"], "error: task.relatons is not a key of the task group; valid keys: name, supervised, relations,"),
    ("finetune_task_key", "train.py", ['finetune=["task=downstream","+task.relatons=true"]'], "error: finetune (second phase): task.relatons is not a key"),
    ("finetune_val_fraction", "train.py", ['finetune=["task=downstream","data.val_fraction=1.5"]'], "error: finetune (second phase): data.val_fraction=1.5 is invalid"),
    ("malformed_override", "train.py", ["optimizer.lr=[1,"], "error: override 'optimizer.lr=[1,' is invalid: no viable alternative"),
    ("pretrained_missing", "train.py", ["pretrained=/no/such/file.ckpt"], "error: pretrained='/no/such/file.ckpt' is invalid"),
    ("pretrained_empty", "train.py", ["pretrained={empty}"], "error: '{empty}' is empty (0 bytes)"),
    ("pretrained_truncated", "train.py", ["pretrained={truncated}"], "error: '{truncated}' is truncated, corrupt or not a checkpoint"),
    ("pretrained_garbage", "train.py", ["pretrained={garbage}"], "error: '{garbage}' is"),
    ("pretrained_text", "train.py", ["pretrained={text}"], "error: '{text}' is truncated, corrupt or not a checkpoint"),
    ("pretrained_unsafe", "train.py", ["pretrained={unsafe}"], "error: refusing to load '{unsafe}': it holds objects"),
    ("pretrained_other_backbone", "train.py", ["pretrained={norun}"], "error: pretrained='{norun}' is invalid for this backbone"),
    ("resume_missing", "train.py", ["resume=/no/such/last.ckpt"], "error: resume='/no/such/last.ckpt' is invalid"),
    ("resume_empty", "train.py", ["resume={empty}"], "error: '{empty}' is empty (0 bytes)"),
    ("resume_garbage", "train.py", ["resume={garbage}"], "error: '{garbage}' is"),
    ("resume_unsafe", "train.py", ["resume={unsafe}"], "error: refusing to load '{unsafe}'"),
    ("finetune_bad_value", "train.py", ['finetune=["task=downstream","optimizer.lr=abc"]'], "error: finetune (second phase): optimizer.lr='abc'"),
    ("finetune_unknown_option", "train.py", ['finetune=["task=sideways"]'], "error: finetune=['task=sideways'] is invalid"),
    ("finetune_not_overrides", "train.py", ['finetune=["downstream"]'], "error: finetune=['downstream'] is invalid"),
    ("output_dir_not_writable", "train.py", ["paths.log_dir={afile}/runs"], "error: the run directory '{afile}/runs/"),
    ("images_truncated", "train.py", ["dataset=image_folder", "dataset.root={images_truncated}", "dataset.image_size=16", "dataset.patch_size=4", "data.batch_size=4"],
     "error: dataset 'image_folder': 1 of the 12 train image files cannot be decoded"),
    ("images_not_images", "train.py", ["dataset=image_folder", "dataset.root={images_not_images}", "dataset.image_size=16", "dataset.patch_size=4", "data.batch_size=4"],
     "error: dataset 'image_folder': 1 of the 13 train image files cannot be decoded"),
    ("one_image_per_class", "train.py", ["dataset=image_folder", "dataset.root={images_single}", "dataset.image_size=16", "dataset.patch_size=4", "data.batch_size=1"],
     "error: dataset 'image_folder': the validation split is empty"),
    ("eval_ckpt_not_given", "evaluate.py", [], "error: ckpt_path has no value: pass ckpt_path=<value>"),
    ("megapatch_side_one", "train.py", ["task=megapatch", "task.megapatch.side=1"], "error: task.megapatch.side=1 is invalid: an integer >= 2"),
    ("eval_ckpt_missing", "evaluate.py", ["ckpt_path=/no/such.ckpt"], "error: checkpoint '/no/such.ckpt' does not exist"),
    ("eval_ckpt_empty", "evaluate.py", ["ckpt_path={empty}"], "error: '{empty}' is empty (0 bytes)"),
    ("eval_ckpt_truncated", "evaluate.py", ["ckpt_path={truncated}"], "error: '{truncated}' is truncated, corrupt or not a checkpoint"),
    ("eval_ckpt_unsafe", "evaluate.py", ["ckpt_path={unsafe}"], "error: refusing to load '{unsafe}'"),
    ("eval_ckpt_no_config", "evaluate.py", ["ckpt_path={norun}"], "error: ckpt_path='{norun}' is invalid: it holds no saved run config"),
    ("eval_bad_split", "evaluate.py", ["ckpt_path={best}", "splits=[train]"], "error: splits=['train'] is invalid"),
]


@pytest.mark.parametrize("script, overrides, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_code_2(cli, tmp_path, script, overrides, message):
    names = {k: str(v) for k, v in files(tmp_path).items()}
    if any("{best}" in o for o in overrides):
        names["best"] = str(weights_only_checkpoint(tmp_path))
    if any("{images_" in o for o in overrides):
        names["images_truncated"] = str(image_folder(tmp_path, 6, "truncated"))
        names["images_not_images"] = str(image_folder(tmp_path, 6, "not_an_image"))
        names["images_single"] = str(image_folder(tmp_path, 1))
    overrides = [o.format(**names) for o in overrides]
    code, out, err = cli(script, *FAST, *overrides)
    assert code == 2, err[-2000:]
    assert err.lstrip().startswith(message.format(**names)), err[-2000:]
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("*.ckpt*")) or all(p.parent == tmp_path for p in tmp_path.rglob("*.ckpt*"))


def test_the_table_is_long_enough():
    assert len(CASES) >= 40


def test_a_run_without_a_checkpoint_callback_is_refused_before_training(cli, tmp_path):
    code, out, err = cli("train.py", *FAST, "~callbacks.model_checkpoint", "+trainer.enable_checkpointing=false",
                         f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2 and err.startswith("error: callbacks: no ModelCheckpoint configured")
    assert "Epoch" not in out and not (tmp_path / "run" / "tensorboard").exists()


def weights_only_checkpoint(tmp: Path) -> Path:
    """Like a run's best.ckpt: weights and the run config, none of the state a resume needs."""
    from omegaconf import OmegaConf

    from conftest import compose_config

    cfg = compose_config(tmp / "composed", TINY)
    path = tmp / "best.ckpt"
    torch.save({"state_dict": {"backbone.x": torch.zeros(2)}, "relvit_config": OmegaConf.to_container(cfg)}, path)
    return path


# (id, script, arguments (may name {best}), what the one line must contain: key, value, what is valid)
PROBES = [
    ("swin_image_size", "train.py", ["backbone=swin_tiny"], ["dataset.image_size=16", "Swin with 4 stages", "divisible by 32"]),
    ("val_fraction_zero", "train.py", ["data.val_fraction=0"], ["data.val_fraction=0", "strictly between 0 and 1"]),
    ("select_on_train", "train.py", ["data.select_on=train"], ["data.select_on='train'", "one of val, test"]),
    ("compile_maybe", "train.py", ["compile=maybe"], ["compile='maybe'", "true or false"]),
    ("labels_per_class", "train.py", ["data.labels_per_class=-1"], ["data.labels_per_class=-1", "null or an integer >= 1"]),
    ("label_fraction", "train.py", ["data.label_fraction=2"], ["data.label_fraction=2", "null or a number in (0, 1]"]),
    ("decode_xpu", "train.py", ["data.decode=xpu"], ["data.decode='xpu'", "one of auto, cpu, gpu, device"]),
    ("dataset_root_missing", "train.py", ["dataset=cifar10", "dataset.root=/no/such/data"],
     ["dataset.root='/no/such/data'", "an existing folder", "dataset.download=true"]),
    ("eval_knn_k", "evaluate.py", ["ckpt_path={best}", "protocol=knn", "knn.k=0"], ["knn.k=0", "an integer >= 1"]),
    ("precision_7", "train.py", ["trainer.precision=7"], ["trainer.precision=7", "one of 32-true,", "bf16-mixed"]),
    ("accelerator_tpu", "train.py", ["trainer.accelerator=tpu"], ["trainer.accelerator='tpu'", "one of auto, cpu, gpu, cuda"]),
    ("devices_zero", "train.py", ["trainer.devices=0"], ["trainer.devices=0", "an integer >= 1, -1 (every device)"]),
    ("knn_every_zero", "train.py", ["callbacks.knn_monitor.every_n_epochs=0"], ["callbacks.knn_monitor.every_n_epochs=0", "an integer >= 1"]),
    ("betas", "train.py", ["optimizer.betas=[2,3]"], ["optimizer.betas=[2, 3]", "2 numbers, each a number in [0, 1)"]),
    ("resume_best", "train.py", ["resume={best}"], ["resume='{best}'", "weights only", "last.ckpt"]),
    ("unknown_top_key", "train.py", ["+unknown_top_key=1"], ["unknown_top_key", "not a key", "valid keys: "]),
    ("freeze_maybe", "train.py", ["task.freeze_backbone=maybe"], ["task.freeze_backbone='maybe'", "true or false"]),
    ("seed_range", "train.py", ["seed=range(1,)"], ["override 'seed=range(1,)'", "range"]),
    ("finetune_unquoted", "train.py", ["finetune=task=downstream"], ["override 'finetune=task=downstream'", "quote"]),
    ("summary_yaml_tag", "summary", ["tag"], ["overrides.yaml", "cannot be read"]),
    ("summary_metric_text", "summary", ["text"], ["metrics.json", "val/acc='high'", "a number"]),
]


def summary_dir(tmp: Path, kind: str) -> Path:
    job = tmp / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    if kind == "tag":
        (job / ".hydra" / "overrides.yaml").write_text("!!python/object/apply:os.system ['true']\n")
    else:
        (job / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
        (job / "metrics.json").write_text('{"monitor": "val/acc", "val": {"val/acc": "high"}}')
    return tmp / "sweep"


@pytest.mark.parametrize("script, args, parts", [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_a_bad_input_is_refused_before_its_run_dir(cli, tmp_path, monkeypatch, capsys, script, args, parts):
    from relvit.evaluation import summary

    runs = tmp_path / "runs_root"
    monkeypatch.setenv("RELVIT_OUTPUT_DIR", str(runs))
    if script == "summary":
        folder = summary_dir(tmp_path, args[0])
        code, err = summary.main([str(folder)]), capsys.readouterr().err
        assert not [p.name for p in folder.iterdir() if p.name.startswith("summary")]
    else:
        best = str(weights_only_checkpoint(tmp_path)) if any("{best}" in a for a in args) else ""
        parts = [p.format(best=best) for p in parts]
        # a backbone chosen here has sizes of its own: FAST's ViT sizes are left out
        fast = [o for o in FAST if not (o.startswith("backbone") and any(a.startswith("backbone=") for a in args))]
        code, out, err = cli(script, *fast, *(a.format(best=best) for a in args))
        assert not runs.exists(), sorted(str(p.relative_to(runs)) for p in runs.rglob("*"))
    assert code == 2, err[-2000:]
    line = err.strip()
    assert line.startswith("error: ") and "\n" not in line, err[-2000:]
    for part in parts:
        assert part in line, f"{part!r} not in {line!r}"
