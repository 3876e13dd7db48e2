"""Every experiment config composes and trains one batch (fast_dev_run) on fixture data written in
its dataset's real layout."""
import json

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from relvit.config.checks import check_config
from relvit.training.run import train

from conftest import CONF, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def write_images(folder, count, size, rng, suffix):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:04d}{suffix}")


@pytest.fixture(scope="module")
def fixture_roots(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("data")
    cifar = root / "cifar10"
    for c in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]:
        write_images(cifar / "train" / c, 4, 32, rng, ".jpg")
    imagenet = root / "imagenet100"
    wnids = ["n01440764", "n01443537", "n01484850"]
    for w in wnids:
        write_images(imagenet / "train.X1" / w, 4, 64, rng, ".JPEG")
        write_images(imagenet / "val.X" / w, 2, 64, rng, ".JPEG")
    (imagenet / "Labels.json").write_text(json.dumps({w: f"class {i}" for i, w in enumerate(wnids)}))
    return {"cifar10": cifar, "imagenet100": imagenet}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_one_batch(tmp_path, fixture_roots, name):
    overrides = [f"experiment={name}", "debug=fast", "data.batch_size=2", "data.num_workers=0", "trainer.accelerator=cpu"]
    cfg = compose_config(tmp_path, overrides)
    base = str(cfg.dataset.root).rstrip("/").split("/")[-1]
    if base in fixture_roots:
        overrides += [f"dataset.root={fixture_roots[base]}", "dataset.num_classes=null"]
    cfg = compose_config(tmp_path, overrides)
    assert cfg.trainer.fast_dev_run
    check_config(cfg)  # as train.py does first: the experiment passes the schema and the rules
    summary = train(cfg)
    assert summary["val"] and summary["task"] == cfg.task.name
    assert not (tmp_path / "run").exists()  # a debug run writes nothing (Hydra's log aside)


def test_experiments_keep_the_original_hyper_parameters(tmp_path):
    up = compose_config(tmp_path, ["experiment=upstream_cifar10"])
    assert (up.task.name, up.dataset.name, up.backbone.embed_dim, up.trainer.max_epochs) == ("upstream", "cifar10", 384, 100)
    assert (up.optimizer.lr, up.optimizer.weight_decay, up.backbone.drop_path_rate, up.backbone.drop_rate) == (5e-4, 0.1, 0.1, 0.0)
    assert up.seed == 35771 and up.trainer.gradient_clip_val == 1.0
    swin = compose_config(tmp_path, ["experiment=downstream_only_swin_cifar10"])
    assert (swin.task.name, swin.dataset.name, swin.data.batch_size, swin.seed) == ("joint", "cifar10_224", 64, 2022)
    mega = compose_config(tmp_path, ["experiment=upstream_megapatch_imagenet100"])
    assert (mega.task.name, mega.task.megapatch.side, mega.dataset.name) == ("megapatch", 6, "imagenet100")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_the_original_recipe(tmp_path, name):
    cfg = compose_config(tmp_path, [f"experiment={name}", "recipe=original"])
    default = compose_config(tmp_path, [f"experiment={name}"])
    # the paper-scale comparison runs the original recipe by itself; every other experiment the corrected one
    assert (cfg.recipe.name, default.recipe.name) == ("original", "original" if name.endswith("_paper") else "corrected")
    # the experiment's own hyper-parameters are kept; the recipe changes only its own keys
    for key in ("seed", "dataset.name", "backbone._target_", "task.name", "optimizer.lr", "data.batch_size", "trainer.max_epochs"):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(default, key), key
    # the paper-scale comparison keeps every selection on its validation split, as the comparison must
    select_on = "val" if name.endswith("_paper") else "test"
    assert (cfg.data.select_on, cfg.data.drop_last, cfg.task.decay_all_parameters, cfg.task.online_probe) == (select_on, False, True, False)
    assert cfg.task.relation_loss_dropout_needs_smoothing
    if cfg.task.patch_augment:
        assert cfg.task.patch_augment.normalized_input
    if cfg.task.megapatch:
        assert cfg.task.megapatch.shared_cuts and cfg.task.megapatch.resize == "bilinear"
    if "t2t" in cfg.backbone._target_:
        assert (cfg.backbone.drop_path_rate, default.backbone.drop_path_rate) == (0.0, 0.0 if name.endswith("_paper") else 0.1)
    if "cls_token_std" in cfg.backbone:
        assert cfg.backbone.cls_token_std == 0.02
    if "pos_drop_without_pos_embed" in cfg.backbone:  # ViT and T2T-ViT: token dropout only with positions
        assert (cfg.backbone.pos_drop_without_pos_embed, default.backbone.pos_drop_without_pos_embed) == (
            False, not name.endswith("_paper"))


@pytest.mark.parametrize("dataset,split", [("flower102", "val"), ("flower102_56", "val"), ("cifar10", "test"),
                                           ("imagenet100", "test")])
def test_the_original_recipe_selects_where_the_original_does(tmp_path, dataset, split):
    """On the test split for datasets without a val split of their own; on Flowers-102's official val split."""
    cfg = compose_config(tmp_path, [f"dataset={dataset}", "recipe=original"])
    assert cfg.data.select_on == split
    assert compose_config(tmp_path, [f"dataset={dataset}"]).data.select_on == "val"


@pytest.mark.parametrize("target", ["relvit.backbones.vit.ViTBackbone", "relvit.backbones.t2t_vit.T2TViTBackbone"])
def test_the_original_drops_tokens_only_where_position_embeddings_are_added(target):
    import torch
    from hydra.utils import get_class

    sizes = {"image_size": 32, "patch_size": 8, "embed_dim": 24, "depth": 1, "num_heads": 2} if "vit.ViT" in target \
        else {"variant": "t2t_vit_7", "image_size": 32}
    images = torch.rand(2, 3, 32, 32)

    def twice(always: bool, add_pos_embed: bool) -> bool:
        """Whether two forward passes differ, the token dropout (p 0.5) the only module in training mode."""
        backbone = get_class(target)(**sizes, drop_path_rate=0.0, pos_drop_without_pos_embed=always).eval()
        token_drop = getattr(backbone, "vit", backbone).pos_drop
        token_drop.p = 0.5  # drop_rate would also feed the blocks' dropouts
        token_drop.train()
        return not torch.equal(backbone(images, add_pos_embed=add_pos_embed)[1], backbone(images, add_pos_embed=add_pos_embed)[1])

    assert twice(always=True, add_pos_embed=False) and twice(always=True, add_pos_embed=True)
    assert not twice(always=False, add_pos_embed=False)  # upstream under recipe=original: no token dropout
    assert twice(always=False, add_pos_embed=True)


def test_quickstart_runs_one_batch_with_the_original_recipe(tmp_path):
    cfg = compose_config(tmp_path, ["experiment=quickstart", "recipe=original", "debug=fast", "trainer.accelerator=cpu"])
    summary = train(cfg)
    assert summary["val"] and summary["test"]


def test_the_regularisation_table_of_the_fidelity_doc_is_what_the_experiments_compose(tmp_path):
    """docs/fidelity.md says, per original experiment, which weight decay, dropout and drop-path it trains with."""
    import re

    from conftest import REPO

    doc = (REPO / "docs" / "fidelity.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (.+) \|$", doc, re.M)
    originals = [n for n in EXPERIMENTS if n.startswith(("upstream_", "downstream_"))]
    assert sorted(name for name, *_ in rows) == sorted(originals)
    for name, decay, dropout, corrected, original, _ in rows:
        for recipe, drop_path in (("corrected", corrected), ("original", original)):
            cfg = compose_config(tmp_path, [f"experiment={name}", f"recipe={recipe}"])
            composed = (cfg.optimizer.weight_decay, cfg.backbone.drop_rate, cfg.backbone.drop_path_rate)
            assert composed == (float(decay), float(dropout), float(drop_path)), (name, recipe)
