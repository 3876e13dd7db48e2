import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from relvit.errors import ConfigError
from relvit.model.ssl import relation_targets
from relvit.training.run import build


def one_batch(run, train=True):
    images, labels = next(iter(run.datamodule.train_dataloader() if train else run.datamodule.val_dataloader()))
    return run.datamodule.transform_batch(images, train=train), labels


@pytest.mark.parametrize("task", ["upstream", "downstream", "joint"])
def test_one_optimisation_step(tiny_cfg, task):
    run = build(tiny_cfg(f"task={task}"))
    images, labels = one_batch(run)
    out = run.module.compute_losses(images, labels)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for n, p in run.module.backbone.named_parameters() if "blocks.0.attn.qkv.weight" in n]
    assert grads[0] is not None and grads[0].abs().sum() > 0
    expected = {"upstream": {"rel_loss", "pos_loss"}, "downstream": {"clf_loss"}, "joint": {"rel_loss", "pos_loss", "clf_loss"}}[task]
    assert expected <= set(out)
    assert ("clf_loss" in out) == (task != "upstream")


@pytest.mark.parametrize("task,added", [("upstream", False), ("downstream", True), ("joint", True)])
def test_positional_embeddings_are_added_only_outside_upstream(tiny_cfg, task, added):
    run = build(tiny_cfg(f"task={task}", "backbone.drop_path_rate=0.0"))
    run.module.eval()
    images, labels = one_batch(run, train=False)
    before = run.module.compute_losses(images, labels)["loss"]
    with torch.no_grad():
        run.module.backbone.vit.pos_embed.add_(torch.randn_like(run.module.backbone.vit.pos_embed))
    after = run.module.compute_losses(images, labels)["loss"]
    assert (not torch.allclose(before, after)) == added


def test_upstream_keeps_the_position_parameter_for_fine_tuning(tiny_cfg):
    run = build(tiny_cfg("task=upstream"))
    assert "backbone.vit.pos_embed" in run.module.state_dict()


def test_patch_shuffle_moves_cells_and_targets_together(tiny_cfg):
    run = build(tiny_cfg("task=upstream", "task.patch_shuffle=true"))
    module = run.module
    g = module.backbone.grid_size
    images = torch.arange(g * g, dtype=torch.float32).view(1, 1, g, g).repeat_interleave(4, 2).repeat_interleave(4, 3)
    images = images.expand(2, 3, -1, -1).contiguous()  # every cell holds its own raster index
    shuffled, perm = module.shuffle_patches(images)
    assert torch.equal(shuffled[:, 0, ::4, ::4].reshape(2, -1), perm.float())
    assert not torch.equal(perm[0], torch.arange(g * g))
    # the relation target of the shuffled pair (i, j) is the one of the cells they show
    rel = relation_targets(g)
    i, j = 0, 1
    assert rel[perm[0, i], perm[0, j]] == module.rel_target[perm[0]][:, perm[0]][i, j]
    images_, labels = one_batch(run)
    assert torch.isfinite(module.compute_losses(images_, labels)["loss"])


def test_per_patch_augmentation_changes_patches_not_targets(tiny_cfg):
    run = build(tiny_cfg("task=upstream"))
    dm = run.datamodule
    assert dm.batch_transform.patch_augment is not None
    images, labels = next(iter(dm.train_dataloader()))
    x = images.float() / 255
    torch.manual_seed(0)
    augmented = dm.batch_transform.patch_augment(x)
    p = dm.image_size // run.module.backbone.grid_size
    cells = lambda t: t.unfold(2, p, p).unfold(3, p, p)  # [B, 3, G, G, p, p]  # noqa: E731
    changed = (cells(augmented) - cells(x)).abs().amax(dim=(1, 4, 5))  # [B, G, G]
    assert 0 < (changed > 1e-6).float().mean() < 1  # some patches changed, not all the same way
    _, batch_labels = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(batch_labels, labels)
    assert torch.equal(run.module.rel_target, relation_targets(run.module.backbone.grid_size))


def test_frozen_backbone_trains_only_the_classifier(tiny_cfg):
    run = build(tiny_cfg("task=downstream", "task.freeze_backbone=true"))
    trainable = [n for n, p in run.module.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("classifier.") for n in trainable)


def test_patch_shuffle_leaves_validation_batches_in_raster_order(tiny_cfg):
    shuffled = build(tiny_cfg("task=joint", "task.patch_shuffle=true", "backbone.drop_path_rate=0.0"))
    plain = build(tiny_cfg("task=joint", "backbone.drop_path_rate=0.0"))
    plain.module.load_state_dict(shuffled.module.state_dict())
    images, labels = one_batch(plain, train=False)
    shuffled.module.eval(), plain.module.eval()
    a, b = shuffled.module.compute_losses(images, labels), plain.module.compute_losses(images, labels)
    assert all(torch.equal(a[k], b[k]) for k in a)
    shuffled.module.train(), plain.module.train()
    assert not torch.equal(shuffled.module.compute_losses(images, labels)["rel_loss"], plain.module.compute_losses(images, labels)["rel_loss"])


def fit_three_steps(tiny_cfg, *overrides):
    """The backbone weights after three optimiser steps of upstream training, seeded as train.py seeds."""
    # a clip threshold far below the gradient norm, so that clipping acts on every step
    cfg = tiny_cfg("task=upstream", "trainer.limit_train_batches=3", "trainer.limit_val_batches=0",
                   "trainer.gradient_clip_val=0.01", *overrides)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run = build(cfg)
    run.module.initial_probe = None if run.module.probe is None else run.module.probe.fc.weight.detach().clone()
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    trainer.fit(run.module, datamodule=run.datamodule)
    assert trainer.global_step == 3
    return run.module.backbone.state_dict(), run.module


def test_online_probe_leaves_backbone_training_unchanged(tiny_cfg):
    with_probe, module = fit_three_steps(tiny_cfg, "task.online_probe=true")
    without, _ = fit_three_steps(tiny_cfg, "task.online_probe=false")
    # the probe did train: fitted at the end of the epoch (no validation here) to the three batches
    assert module.probe is not None and module.probe.banked == 0 and module.probe.norm.running_mean.abs().sum() > 0
    assert not torch.equal(module.probe.fc.weight, module.initial_probe)
    assert module.probe.fc.weight.grad is None  # never through the run's backward pass
    assert with_probe.keys() == without.keys()
    assert all(torch.equal(with_probe[k], without[k]) for k in with_probe)
    initial = build(tiny_cfg("task=upstream")).module.backbone.state_dict()
    assert not torch.equal(initial["vit.blocks.0.attn.qkv.weight"], with_probe["vit.blocks.0.attn.qkv.weight"])


def test_relation_loss_dropout_needs_smoothing_under_the_original_recipe(tiny_cfg):
    reference = build(tiny_cfg("task=joint"))
    images, labels = one_batch(reference, train=False)

    def rel_loss(*overrides):
        run = build(tiny_cfg("task=joint", "backbone.drop_path_rate=0.0", "task.relation_loss_dropout=0.5", *overrides))
        run.module.load_state_dict(reference.module.state_dict())
        run.module.train()
        torch.manual_seed(1)
        return run.module.compute_losses(images, labels)["rel_loss"]

    plain = rel_loss("task.relation_loss_dropout=0.0")
    assert not torch.equal(rel_loss(), plain)
    assert torch.equal(rel_loss("recipe=original"), plain)  # no smoothing: the plain cross-entropy
    smoothed = rel_loss("task.relation_loss_dropout=0.0", "task.relation_label_smoothing=0.1")
    assert not torch.equal(rel_loss("recipe=original", "task.relation_label_smoothing=0.1"), smoothed)


@pytest.mark.parametrize("recipe,exempt", [("corrected", True), ("original", False)])
def test_weight_decay_exemptions_follow_the_recipe(tiny_cfg, recipe, exempt):
    run = build(tiny_cfg(f"recipe={recipe}"))
    run.module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    groups = run.module.configure_optimizers()["optimizer"].param_groups
    no_decay = [p for g in groups if g["weight_decay"] == 0 for p in g["params"]]
    cls = run.module.backbone.vit.cls_token
    assert any(p is cls for p in no_decay) == exempt
    assert (len(no_decay) > 0) == exempt


def test_layer_decay_scales_each_blocks_rate_and_leaves_the_heads_at_the_full_rate(tiny_cfg):
    def rates(*overrides):
        run = build(tiny_cfg("task=downstream", "backbone.depth=2", "optimizer.lr=1.0e-3", *overrides))
        run.module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
        out = run.module.configure_optimizers()
        out["lr_scheduler"]["scheduler"].step()  # a step into the warm-up: every rate moves by one factor
        by_param = {id(p): g["initial_lr"] for g in out["optimizer"].param_groups for p in g["params"]}
        return {name: by_param[id(p)] for name, p in run.module.named_parameters()}, out["optimizer"]

    decayed, optimizer = rates("task.layer_decay=0.5")
    assert decayed["classifier.fc.weight"] == pytest.approx(1.0e-3)
    assert decayed["backbone.vit.norm.weight"] == pytest.approx(1.0e-3)
    assert decayed["backbone.vit.blocks.1.mlp.fc1.weight"] == pytest.approx(0.5e-3)
    assert decayed["backbone.vit.blocks.0.attn.qkv.weight"] == pytest.approx(0.25e-3)
    assert decayed["backbone.vit.pos_embed"] == decayed["backbone.vit.patch_embed.proj.weight"] == pytest.approx(0.125e-3)
    assert optimizer.param_groups[0]["initial_lr"] == pytest.approx(1.0e-3)  # the schedule's base rate comes first
    plain, optimizer = rates()
    assert all(rate == pytest.approx(1.0e-3) for rate in plain.values()) and len(optimizer.param_groups) == 2
    assert all(g["weight_decay"] == 0 for g in optimizer.param_groups[1:])


def test_layer_decay_is_off_under_both_recipes_and_checked(tiny_cfg):
    assert tiny_cfg("task=downstream").task.layer_decay is None
    assert tiny_cfg("task=downstream", "recipe=original").task.layer_decay is None
    from relvit.config.checks import check_config

    with pytest.raises(ConfigError, match=r"task.layer_decay=1.5 is invalid: "):
        check_config(tiny_cfg("task=downstream", "task.layer_decay=1.5"))


def test_validation_means_are_over_images_not_batches(tiny_cfg):
    """The logged val/loss of a split whose last batch is smaller is the mean over its images (a mean
    over batches would give that last batch the weight of a whole one)."""
    cfg = tiny_cfg("task=upstream", "data.eval_batch_size=100", "callbacks={}", "logger={}", "trainer.limit_val_batches=null")
    run = build(cfg)
    run.datamodule.setup("fit")
    module = run.module.eval()
    total, images, sizes = 0.0, 0, []
    with torch.no_grad():
        for x, y in run.datamodule.val_dataloader():
            out = module.compute_losses(run.datamodule.transform_batch(x, train=False), y)
            total, images = total + float(out["loss"]) * len(y), images + len(y)
            sizes.append(len(y))
    assert len(set(sizes)) == 2  # unequal batches, or the test could not tell the two means apart
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (logged,) = trainer.validate(module, datamodule=run.datamodule, verbose=False)
    assert logged["val/loss"] == pytest.approx(total / images, rel=1e-5)
