"""experiment=relvit_vs_scratch_cifar10 and its paper-scale twin: they compose, and tiny versions run
end to end on generated 32 px JPEGs, the test split held out of the training folders."""
import csv

import pytest

from conftest import TINY, compose_config, write_image

# what shrinks either experiment to seconds: the tiny ViT, two steps a phase, one rate, one seed
SHRINK = [o for o in TINY if not o.startswith(("backbone=", "trainer.max_epochs", "data.batch_size"))] + [
    "data.batch_size=8", "trainer.max_steps=2", "trainer.val_check_interval=1", "comparison.lrs=[1.0e-3]",
    'comparison.finetune=["task=downstream","data.batch_size=8","trainer.max_steps=2","trainer.val_check_interval=1"]',
    "comparison.linear.steps=5", "hydra.sweeper.params.seed=1"]


def cifar_jpegs(root, per_class=20):
    """CIFAR-10's JPEG layout, train/<class>/<n>.jpg only: ten classes of 32 px images, one colour a class."""
    for label in range(10):
        for index in range(per_class):
            write_image(root / "train" / f"class{label}" / f"{index:04d}.jpg", 32,
                        colour=(25 * label, 10 * index, 255 - 25 * label))
    return root


@pytest.mark.parametrize("experiment", ["relvit_vs_scratch_cifar10", "relvit_vs_scratch_cifar10_paper"])
def test_the_cifar10_experiments_compose(tmp_path, experiment):
    cfg = compose_config(tmp_path, [f"experiment={experiment}"])
    assert cfg.dataset.name == "cifar10" and cfg.data.test_fraction > 0
    assert list(cfg.comparison.arms) == ["relvit", "scratch", "joint"]
    assert [a.pretrained for a in cfg.comparison.arms.values()] == [True, False, False]
    assert list(cfg.comparison.budgets) == ["100pct", "10pct", "1pct"] and len(cfg.comparison.lrs) >= 2


def test_the_paper_experiment_is_the_papers_recipe_and_scale(tmp_path):
    cfg = compose_config(tmp_path, ["experiment=relvit_vs_scratch_cifar10_paper"])
    assert (cfg.backbone.embed_dim, cfg.backbone.depth, cfg.dataset.patch_size) == (384, 12, 4)
    assert cfg.recipe.name == "original" and cfg.trainer.max_epochs == 100 and "trainer.max_steps=16700" in cfg.comparison.finetune
    assert cfg.data.select_on == "val"  # selection stays on the held-out validation split, unlike the original


@pytest.mark.slow  # ten tiny runs and four frozen evaluations per experiment: about a minute each on 2 CPU cores
@pytest.mark.parametrize("experiment", ["relvit_vs_scratch_cifar10", "relvit_vs_scratch_cifar10_paper"])
def test_a_tiny_cifar10_comparison_runs_end_to_end_on_jpegs(cli, tmp_path, experiment):
    root = cifar_jpegs(tmp_path / "cifar10")
    code, out, err = cli("train.py", f"experiment={experiment}", f"dataset.root={root}", *SHRINK,
                         f"paths.log_dir={tmp_path / 'outputs'}")
    assert code == 0, err[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    with open(sweep / "relvit_vs_scratch.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == ["relvit (pre-trained encoder), n=1", "scratch (its random init), n=1", "joint, n=1",
                           "relvit − scratch", "relvit − joint"]
    names = [r[0] for r in rows[1:]]
    for budget in ("100pct", "10pct", "1pct"):  # test metrics: the held-out test split exists
        assert f"fine-tuning test/acc, labels {budget}" in names
        assert f"fine-tuning lr chosen on val, labels {budget}" in names
    assert all(cell.strip() for row in rows for cell in row)
    splits = (sweep / "0" / "1pct" / "joint" / "lr0.001" / "config.yaml").read_text()
    assert "test_fraction: 0.1" in splits and "name: joint" in splits
