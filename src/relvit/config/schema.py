"""The schema: every key of every config group, with its type and range (see conf/ for what each means).

``check_config`` (relvit.config.checks) checks a composed config against ``SCHEMAS[entry]`` in one
pass before any work; the values that choose a part (a backbone, a data source) name its keys by
``_target_``. The rules that tie keys together live in relvit.config.checks.
"""
from __future__ import annotations

from relvit.backbones.t2t_vit import T2T_VIT_VARIANTS
from relvit.backbones.vit import ATTENTION_MASKS, POSITION_EMBEDDINGS
from relvit.config.schema_types import (
    ByTarget,
    MapOf,
    Node,
    Spec,
    Value,
    boolean,
    choice,
    integer,
    list_of,
    number,
    numbers,
    overrides,
    target,
    text,
)
from relvit.data.datamodule import MODEL_SELECTION_SPLITS
from relvit.data.encoded import DECODE_MODES
from relvit.data.image_augment import EVAL_TRANSFORMS, TRAIN_TRANSFORMS
from relvit.data.patch_augment import CROP_MODES, PATCH_FORMS
from relvit.data.verify import BAD_IMAGE_POLICIES
from relvit.model.schedules import DECAYS
from relvit.model.ssl.megapatch import RESIZE_SAMPLING
from relvit.model.task import CLASSIFIER_POOLS, MONITOR_MODES, TASK_NAMES
from relvit.probes.features import FEATURE_CHOICES
from relvit.runs.console import PROGRESS_BARS

RATE = number(0, 1)  # a probability in [0, 1)
SEED = integer(0, 2**32 - 1)
COLOURS = numbers(3, number(-10, 10))
ROOTED = {"root": text(null=True), "download": boolean()}

SOURCES = {
    "relvit.data.sources.digits.DigitsSource": {"image_size": integer(8), "test_fraction": number(0, 1, open_lo=True),
                                                "seed": SEED},
    **{f"relvit.data.sources.{name}": ROOTED for name in (
        "cifar.CIFAR10Source", "cifar.CIFAR100Source", "svhn.SVHNSource", "flowers.Flowers102Source",
        "tiny_imagenet.TinyImageNetSource", "imagenet100.ImageNet100Source", "image_folder.ImageFolderSource")},
    "relvit.data.sources.imagenet_subset.ImageNetSubsetSource": {**ROOTED, "class_list": text(null=True)},
}

DATASET = Node({
    "name": text(), "num_classes": integer(2, null=True), "image_size": integer(1), "patch_size": integer(1),
    "mean": COLOURS, "std": numbers(3, number(0, 10, open_lo=True)), "train_transform": choice(*TRAIN_TRANSFORMS),
    "eval_transform": choice(*EVAL_TRANSFORMS), "crop_padding": integer(0), "hflip": boolean(), **ROOTED,
    "class_list": text(null=True), "source": ByTarget(SOURCES), "original_select_on": choice(*MODEL_SELECTION_SPLITS),
})

DROPS = {"drop_rate": RATE, "attn_drop_rate": RATE, "drop_path_rate": RATE}
STAGES = list_of(integer(1))
BACKBONE = ByTarget({
    "relvit.backbones.vit.ViTBackbone": {
        "image_size": integer(1), "patch_size": integer(1), "embed_dim": integer(1), "depth": integer(1),
        "num_heads": integer(1), "mlp_ratio": number(0, open_lo=True), **DROPS, "attention_mask": choice(*ATTENTION_MASKS),
        "class_token": boolean(), "position_embedding": choice(*POSITION_EMBEDDINGS), "cls_token_std": number(0),
        "pos_drop_without_pos_embed": boolean()},
    "relvit.backbones.swin.SwinBackbone": {
        "image_size": integer(1), "embed_dim": integer(1), "depths": STAGES, "num_heads": STAGES, "window_size": integer(1),
        **DROPS},
    "relvit.backbones.t2t_vit.T2TViTBackbone": {"variant": choice(*T2T_VIT_VARIANTS), "image_size": integer(1), **DROPS,
                                              "pos_drop_without_pos_embed": boolean()},
})

MEGAPATCH = Node({"_target_": target("relvit.model.ssl.megapatch.MegaPatch"), "patch_size": integer(1), "side": integer(2),
                  "shared_cuts": boolean(), "resize": choice(*RESIZE_SAMPLING)}, null=True)
PATCH_AUGMENT = Node({
    "_target_": target("relvit.data.patch_augment.PatchAugment"), "patch_size": integer(1),
    "ops": Value("a string like colJitter:0.8-grayScale:0.2, or a list of them",
                 lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))),
    "crop": choice(*CROP_MODES), "mean": COLOURS, "std": COLOURS, "normalized_input": boolean(), "compile": boolean(),
    "form": choice(*PATCH_FORMS)}, null=True)

#: task.layer_decay / recipe.layer_decay: null is off, else block i of L gets the rate times decay^(L - i)
LAYER_DECAY = number(0, 1, open_lo=True, open_hi=False, null=True)
TASK = Node({
    "name": choice(*TASK_NAMES),
    **{k: boolean() for k in ("supervised", "relations", "positions", "distances", "angles", "add_pos_embed",
                              "patch_shuffle", "online_probe", "relation_loss_dropout_needs_smoothing", "cls_to_patches",
                              "freeze_backbone", "decay_all_parameters")},
    "probe_lr": number(0, open_lo=True), "probe_steps": integer(1), "relation_label_smoothing": RATE,
    "relation_loss_dropout": RATE, "classifier_pool": choice(*CLASSIFIER_POOLS), "monitor": text(),
    "monitor_mode": choice(*MONITOR_MODES), "megapatch": MEGAPATCH, "patch_augment": PATCH_AUGMENT,
    "layer_decay": LAYER_DECAY,
})

DATA = Node({
    "_target_": target("relvit.data.datamodule.RelViTDataModule"), "source": ByTarget(SOURCES),
    **{k: DATASET.keys[k] for k in ("image_size", "mean", "std", "train_transform", "eval_transform", "crop_padding", "hflip")},
    "patch_augment": PATCH_AUGMENT, "megapatch": MEGAPATCH, "seed": SEED, "batch_size": integer(1),
    "eval_batch_size": integer(1, null=True), "decode": choice(*DECODE_MODES), "num_workers": integer(0),
    "pin_memory": boolean(), "on_bad_image": choice(*BAD_IMAGE_POLICIES), "val_fraction": number(0, 1), "split_seed": SEED,
    "select_on": choice(*MODEL_SELECTION_SPLITS), "labels_per_class": integer(1, null=True),
    "label_fraction": number(0, 1, open_lo=True, open_hi=False, null=True), "label_seed": SEED,
    "restrict_labels": boolean(), "drop_last": boolean(), "in_memory_on_device": boolean(),
    "test_fraction": number(0, 1),
})

RECIPE = Node({
    "name": text(), "patch_ops_on_normalized": boolean(), "megapatch_resize": choice(*RESIZE_SAMPLING),
    "megapatch_shared_cuts": boolean(), "decay_all_parameters": boolean(), "online_probe": boolean(),
    "t2t_drop_path_rate": RATE, "drop_last": boolean(), "select_on": choice(*MODEL_SELECTION_SPLITS),
    "cls_token_std": number(0), "relation_loss_dropout_needs_smoothing": boolean(), "mixed_precision": boolean(),
    "pos_drop_without_pos_embed": boolean(), "layer_decay": LAYER_DECAY,
})

OPTIMIZER = Node({
    "_target_": target("torch.optim.AdamW"), "_partial_": boolean(), "lr": number(0, open_lo=True),
    "weight_decay": number(0), "betas": numbers(2, number(0, 1)), "eps": number(0, open_lo=True), "amsgrad": boolean(),
    "fused": boolean(null=True),
})

SCHEDULER = Node({"_target_": target("relvit.model.schedules.warmup_cosine"), "_partial_": boolean(), "decay": choice(*DECAYS),
                  "warmup_fraction": number(0, 1), "min_lr": number(0)})

#: Lightning's precision names (and the numbers it also takes).
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", 32, 16, 64, "32", "16", "64", "bf16")
BATCHES = Value("null, a fraction in [0, 1] or a number of batches >= 0",
                lambda v: v is None or (isinstance(v, float) and 0 <= v <= 1) or integer(0).ok(v))
DEVICES = Value("an integer >= 1, -1 (every device), auto, or a list of device indices",
                lambda v: v in ("auto", -1) or integer(1).ok(v) or (isinstance(v, list) and bool(v) and all(map(integer(0).ok, v))))
TRAINER = Node({
    "_target_": target("lightning.pytorch.Trainer"), "default_root_dir": text(),
    "accelerator": choice("auto", "cpu", "gpu", "cuda", "mps"), "devices": DEVICES, "num_nodes": integer(1),
    "strategy": text(), "sync_batchnorm": boolean(),
    "precision": choice(*PRECISIONS), "max_epochs": integer(1), "max_steps": integer(-1),
    "gradient_clip_val": number(0, null=True), "gradient_clip_algorithm": choice("norm", "value", null=True),
    "accumulate_grad_batches": integer(1), "check_val_every_n_epoch": integer(1, null=True),
    "val_check_interval": number(0, open_lo=True, null=True),
    "limit_train_batches": BATCHES, "limit_val_batches": BATCHES, "limit_test_batches": BATCHES, "overfit_batches": BATCHES,
    "log_every_n_steps": integer(1), "num_sanity_val_steps": integer(-1), "deterministic": Value("true, false or warn", lambda v: isinstance(v, bool) or v == "warn"),
    "benchmark": boolean(null=True), "detect_anomaly": boolean(), "profiler": choice("simple", "advanced", "pytorch", null=True),
    "fast_dev_run": Value("true, false or a number of batches >= 1", lambda v: isinstance(v, bool) or integer(1).ok(v)),
    "enable_progress_bar": boolean(), "enable_model_summary": boolean(), "enable_checkpointing": boolean(),
})

SAVED = {"save_dir": text(), "name": text(null=True)}
LOGGER = Node({
    "tensorboard": Node({"_target_": target("lightning.pytorch.loggers.TensorBoardLogger"), **SAVED,
                         "version": text(), "default_hp_metric": boolean()}),
    "csv": Node({"_target_": target("lightning.pytorch.loggers.CSVLogger"), **SAVED, "version": text()}),
    "wandb": Node({"_target_": target("relvit.runs.trackers.wandb_logger"), **SAVED, "project": text(), "group": text(null=True),
                   "tags": list_of(text()), "offline": boolean(null=True), "log_model": boolean()}),
    "mlflow": Node({"_target_": target("relvit.runs.trackers.mlflow_logger"), "save_dir": text(), "experiment_name": text(),
                    "run_name": text(null=True), "tracking_uri": text(null=True), "tags": MapOf(text())}),
}, null=True)

EVERY = integer(1)
KNN = Node({"k": integer(1), "temperature": number(0, open_lo=True)})
# each callback may be null: an experiment switches it off so (e.g. callbacks.knn_monitor: null)
CALLBACKS = Node({
    "model_checkpoint": Node({
        "_target_": target("relvit.runs.checkpoint_io.RunCheckpoint"), "dirpath": text(), "filename": text(), "monitor": text(),
        "mode": choice(*MONITOR_MODES), "save_top_k": integer(-1), "save_last": boolean(),
        "auto_insert_metric_name": boolean(), "enable_version_counter": boolean()}, null=True),
    "lr_monitor": Node({"_target_": target("lightning.pytorch.callbacks.LearningRateMonitor"),
                        "logging_interval": choice("step", "epoch", null=True)}, null=True),
    "embedding_images": Node({"_target_": target("relvit.evaluation.pictures.EmbeddingImages")}, null=True),
    "knn_monitor": Node({"_target_": target("relvit.probes.knn_monitor.KNNMonitor"), "every_n_epochs": EVERY,
                         "features": choice(*FEATURE_CHOICES), **KNN.keys}, null=True),
    "pictures": Node({"_target_": target("relvit.evaluation.visualize.PicturesToTensorBoard"), "every_n_epochs": EVERY}, null=True),
}, null=True)

PATHS = Node({k: text() for k in ("root_dir", "data_dir", "log_dir", "output_dir")})

LINEAR = Node({"lrs": list_of(number(0, open_lo=True)), "weight_decays": list_of(number(0)), "steps": integer(1),
               "batch_size": integer(1), "seed": SEED})
ARM = Node({"pretrained": boolean(), "overrides": overrides()})
COMPARISON = Node({"pretrain": overrides(), "finetune": overrides(), "budgets": MapOf(overrides()),
                   "features": choice(*FEATURE_CHOICES), "knn": KNN, "linear": LINEAR, "arms": MapOf(ARM),
                   "lrs": list_of(number(0, open_lo=True)), "resume": boolean()}, null=True)

TRAIN: dict[str, Spec] = {
    "dataset": DATASET, "backbone": BACKBONE, "task": TASK, "data": DATA, "recipe": RECIPE, "optimizer": OPTIMIZER,
    "scheduler": SCHEDULER, "trainer": TRAINER, "logger": LOGGER, "callbacks": CALLBACKS, "paths": PATHS,
    "progress_bar": choice(*PROGRESS_BARS), "print_config": boolean(), "seed": SEED, "pretrained": text(null=True),
    "pretrained_strict": boolean(), "resume": text(null=True), "extend_to_epochs": integer(1, null=True),
    "compile": boolean(), "finetune": overrides(null=True), "comparison": COMPARISON,
}
EVALUATE: dict[str, Spec] = {
    # metrics: the task's own losses and accuracies; knn, linear: the frozen encoder's features
    **TRAIN, "ckpt_path": text(), "splits": list_of(choice("val", "test")), "protocol": choice("metrics", "knn", "linear"),
    "features": choice(*FEATURE_CHOICES), "knn": KNN, "linear": LINEAR,
}
#: Groups every run needs (the others may be null or left out).
REQUIRED_GROUPS = ("dataset", "backbone", "task", "data", "optimizer", "scheduler", "trainer", "paths")
#: The schema of each entry point's config.
SCHEMAS = {"train": TRAIN, "evaluate": EVALUATE}
