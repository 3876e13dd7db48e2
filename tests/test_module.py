import pytest
import torch

from relvit.ssl import relation_targets
from relvit.training import build


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
