"""Each ablation switch of the original changes what it says it changes."""
import pytest
import torch
import torch.nn.functional as F

from relvit.backbones.vit import ViTBackbone, sincos_position_embedding
from relvit.training.run import build


def vit(**kwargs):
    torch.manual_seed(0)
    return ViTBackbone(image_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=2, drop_path_rate=0.0, **kwargs).eval()


def token_changes(backbone):
    """Which outputs change when only the first patch of the image changes."""
    x = torch.rand(1, 3, 16, 16)
    y = x.clone()
    y[..., :4, :4] = torch.rand(3, 4, 4)
    with torch.no_grad():
        (c1, p1), (c2, p2) = backbone(x), backbone(y)
    patches = (p1 - p2).abs().amax(-1)[0] > 1e-6  # [N]
    cls = None if c1 is None else bool((c1 - c2).abs().max() > 1e-6)
    return cls, patches


def test_no_mask_mixes_tokens():
    cls, patches = token_changes(vit())
    assert cls and patches.all()


def test_diagonal_mask_keeps_tokens_apart():
    cls, patches = token_changes(vit(attention_mask="diagonal"))
    assert patches[0] and not patches[1:].any()
    assert not cls  # the CLS token only sees itself


def test_diagonal_clf_row_lets_only_the_cls_token_see_all():
    cls, patches = token_changes(vit(attention_mask="diagonal_clf_row"))
    assert cls and patches[0] and not patches[1:].any()


def test_no_class_token_classifies_from_flattened_patches(tiny_cfg):
    run = build(tiny_cfg("task=downstream", "backbone.class_token=false"))
    assert not run.module.backbone.has_cls_token
    assert run.module.classifier.pool == "flatten"
    assert run.module.classifier.fc.in_features == 36 * 16
    images, labels = next(iter(run.datamodule.train_dataloader()))
    out = run.module.compute_losses(run.datamodule.transform_batch(images, True), labels)
    assert torch.isfinite(out["loss"])


def test_sincos_position_embeddings_are_fixed():
    backbone = vit(position_embedding="sincos")
    pos = backbone.vit.pos_embed
    assert not pos.requires_grad
    assert torch.allclose(pos[0, 1:], sincos_position_embedding(4, 24))
    assert torch.count_nonzero(pos[0, 0]) == 0
    # rows share the row half, columns the column half
    emb = sincos_position_embedding(4, 24)
    assert torch.equal(emb[0, :12], emb[3, :12]) and torch.equal(emb[0, 12:], emb[12, 12:])


def losses_of(run, images, labels, train=False):
    run.module.train(train)
    torch.manual_seed(1)
    return run.module.compute_losses(images, labels)


@pytest.fixture
def batch_and(tiny_cfg):
    def make(*overrides):
        torch.manual_seed(0)
        run = build(tiny_cfg("task=joint", "backbone.drop_path_rate=0.0", *overrides))
        images, labels = next(iter(run.datamodule.val_dataloader()))
        return run, run.datamodule.transform_batch(images, False), labels

    return make


def test_cls_to_patches_changes_what_the_heads_see(batch_and):
    plain, x, y = batch_and()
    added, _, _ = batch_and("task.cls_to_patches=true")
    added.module.load_state_dict(plain.module.state_dict())
    a, b = losses_of(plain, x, y), losses_of(added, x, y)
    assert a["rel_loss"] != b["rel_loss"] and a["clf_loss"] == b["clf_loss"]


def test_relation_label_smoothing(batch_and):
    plain, x, y = batch_and()
    smooth, _, _ = batch_and("task.relation_label_smoothing=0.2")
    smooth.module.load_state_dict(plain.module.state_dict())
    a, b = losses_of(plain, x, y), losses_of(smooth, x, y)
    logits = plain.module.relation_head(plain.module.backbone(x)[1])
    target = plain.module.rel_target.expand(x.shape[0], -1, -1)
    assert b["rel_loss"].item() == pytest.approx(F.cross_entropy(logits, target, label_smoothing=0.2).item(), rel=1e-5)
    assert b["rel_loss"] != a["rel_loss"] and b["pos_loss"] == a["pos_loss"]


def test_relation_loss_dropout_only_while_training(batch_and):
    plain, x, y = batch_and()
    dropped, _, _ = batch_and("task.relation_loss_dropout=0.5")
    dropped.module.load_state_dict(plain.module.state_dict())
    assert losses_of(dropped, x, y)["rel_loss"] == losses_of(plain, x, y)["rel_loss"]
    assert losses_of(dropped, x, y, train=True)["rel_loss"] != losses_of(plain, x, y, train=True)["rel_loss"]


def test_distance_and_angle_tasks(batch_and):
    run, x, y = batch_and("task.distances=true", "task.angles=true")
    out = losses_of(run, x, y)
    assert {"dist_loss", "angle_loss"} <= set(out)
    parts = out["rel_loss"] + out["pos_loss"] + out["dist_loss"] + out["angle_loss"] + out["clf_loss"]
    assert out["loss"].item() == pytest.approx(parts.item(), rel=1e-6)  # the plain sum
    assert run.module.distance_head.num_outputs == 1


def test_no_class_token_keeps_the_final_norm():
    backbone = vit(class_token=False)
    assert isinstance(backbone.vit.norm, torch.nn.LayerNorm)
    _, patches = backbone(torch.rand(2, 3, 16, 16))
    # the final LayerNorm (weight 1, bias 0 at initialisation) leaves every token with mean 0, std 1
    assert torch.allclose(patches.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(patches.var(-1, unbiased=False), torch.ones(2, 16), atol=1e-3)


def test_drop_rates_reach_the_attention_projection_and_the_mlp():
    backbone = vit(drop_rate=0.3, attn_drop_rate=0.2)
    for block in backbone.vit.blocks:
        assert block.attn.proj_drop.p == 0.3 and block.mlp.drop1.p == 0.3 and block.mlp.drop2.p == 0.3
        assert block.attn.attn_drop.p == 0.2
    assert backbone.vit.pos_drop.p == 0.3
    backbone.train()
    x = torch.rand(2, 3, 16, 16)
    assert not torch.equal(backbone(x)[1], backbone(x)[1])  # dropout acts while training


@pytest.mark.parametrize("std", [1e-6, 0.02])
def test_cls_token_initialisation_std(std):
    torch.manual_seed(0)
    backbone = ViTBackbone(image_size=16, patch_size=4, embed_dim=768, depth=1, num_heads=2, cls_token_std=std)
    assert backbone.vit.cls_token.std().item() == pytest.approx(std, rel=0.1)
