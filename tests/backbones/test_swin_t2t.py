"""Swin-T and T2T-ViT backbones: token shapes, position embedding switch, sizes, published weights."""
from __future__ import annotations

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer

from relvit.backbones.registry import VARIANTS, create_backbone
from relvit.backbones.swin import SwinBackbone
from relvit.backbones.t2t_vit import T2T_VIT_VARIANTS, T2TViTBackbone

# Published sizes with a 1000-class head, in millions, at the precision they were published:
# T2T-ViT paper (ICCV 2021) Table; Swin-T from timm's model card (the Swin paper rounds to 28M).
PUBLISHED_M = {name: v.published_m for name, v in VARIANTS.items()}
# Trainable parameters with a 1000-class head that an independent port of the official code
# measured (timm pull request #2426), in millions to four places.
REFERENCE_TRAINABLE_M = {
    "t2t_vit_7": 4.2557,
    "t2t_vit_10": 5.8347,
    "t2t_vit_12": 6.8874,
    "t2t_vit_14": 21.4658,
    "t2t_vit_19": 39.0851,
    "t2t_vit_24": 64.0010,
    "t2t_vit_t_14": 21.4654,
    "t2t_vit_t_19": 39.0847,
    "t2t_vit_t_24": 64.0006,
}


def _head_params(width: int) -> int:
    return width * 1000 + 1000


def _load_strict(build, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Build a model without initialising it, load state_dict strictly, return the model's state."""
    with torch.device("meta"):
        model = build()
    model.load_state_dict(state_dict, strict=True, assign=True)  # still checks names and shapes
    return model.state_dict()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def swin() -> SwinBackbone:
    torch.manual_seed(0)
    return create_backbone("swin_tiny").eval()


@pytest.fixture(scope="module")
def t2t_performer() -> T2TViTBackbone:
    torch.manual_seed(0)
    return T2TViTBackbone("t2t_vit_7").eval()


@pytest.fixture(scope="module")
def t2t_transformer() -> T2TViTBackbone:
    torch.manual_seed(0)
    return T2TViTBackbone("t2t_vit_t_14").eval()


@torch.no_grad()
def test_swin_gives_a_7x7_grid_of_768_wide_tokens_and_ignores_position_switch(swin, images):
    assert (swin.embed_dim, swin.grid_size, swin.num_patches, swin.has_cls_token) == (768, 7, 49, False)
    cls, tokens = swin(images)
    assert cls is None
    assert tokens.shape == (2, 49, 768)
    assert torch.isfinite(tokens).all()
    # Swin has only relative position biases, so the switch has nothing to leave out
    _, without = swin(images, add_pos_embed=False)
    torch.testing.assert_close(without, tokens, rtol=0, atol=0)
    assert swin.position_embeddings() is None and swin.patch_embedding_filters() is None


@torch.no_grad()
def test_swin_tokens_are_the_final_stage_in_raster_order(swin, images):
    expected = swin.swin.forward_features(images)  # [B, 7, 7, 768]
    _, tokens = swin(images)
    # token r * 7 + c is the feature at row r, column c
    torch.testing.assert_close(tokens[:, 1 * 7 + 5], expected[:, 1, 5])
    torch.testing.assert_close(tokens[:, 6 * 7 + 0], expected[:, 6, 0])


@pytest.mark.parametrize("fixture, width", [("t2t_performer", 256), ("t2t_transformer", 384)])
@torch.no_grad()
def test_t2t_gives_cls_and_a_7x7_grid_and_position_switch_matters(request, fixture, width, images):
    model = request.getfixturevalue(fixture)
    assert (model.embed_dim, model.grid_size, model.num_patches, model.has_cls_token) == (width, 7, 49, True)
    cls, tokens = model(images)
    assert cls.shape == (2, width) and tokens.shape == (2, 49, width)
    assert torch.isfinite(cls).all() and torch.isfinite(tokens).all()
    cls_free, tokens_free = model(images, add_pos_embed=False)
    assert not torch.allclose(tokens_free, tokens, atol=1e-3)
    assert not torch.allclose(cls_free, cls, atol=1e-3)
    # the fixed sinusoid is no learned embedding to inspect, and the stem is no convolution
    assert model.position_embeddings() is None and model.patch_embedding_filters() is None


@torch.no_grad()
def test_t2t_pooled_tokens_average_3x3_neighbourhoods_of_the_14x14_tokens(t2t_performer, images):
    model = t2t_performer
    captured = []
    handle = model.norm.register_forward_hook(lambda module, args, out: captured.append(out))
    _, tokens = model(images)
    handle.remove()
    full = captured[0][:, 1:].reshape(2, 14, 14, -1)  # [B, 14, 14, D] after the final norm
    # output (0, 0) covers rows and columns 0..1 (padding not counted); (3, 4) covers 5..7 x 7..9
    torch.testing.assert_close(tokens[:, 0], full[:, 0:2, 0:2].mean(dim=(1, 2)))
    torch.testing.assert_close(tokens[:, 3 * 7 + 4], full[:, 5:8, 7:10].mean(dim=(1, 2)))


@pytest.mark.parametrize("image_size, grid", [(80, 3), (96, 3), (64, 2)])
@torch.no_grad()
def test_t2t_grid_is_half_the_token_grid_rounded_up(image_size, grid):
    model = T2TViTBackbone("t2t_vit_7", image_size=image_size).eval()
    assert model.grid_size == grid
    cls, tokens = model(torch.randn(1, 3, image_size, image_size))
    assert cls.shape == (1, 256) and tokens.shape == (1, grid * grid, 256)


def test_t2t_rejects_unknown_variant_listing_valid_ones():
    with pytest.raises(ValueError, match="t2t_vit_t_14") as excinfo:
        T2TViTBackbone("t2t_vit_15")
    assert "t2t_vit_15" in str(excinfo.value)


def test_image_sizes_the_backbones_cannot_tile_are_rejected(t2t_performer):
    with pytest.raises(ValueError, match="divisible by 16"):
        T2TViTBackbone("t2t_vit_7", image_size=200)
    with pytest.raises(ValueError, match="divisible by 32"):
        create_backbone("swin_tiny", image_size=200)
    with pytest.raises(ValueError, match="224 px"):
        t2t_performer(torch.randn(1, 3, 192, 192))


def test_every_t2t_variant_has_the_published_size():
    assert set(T2T_VIT_VARIANTS) == set(REFERENCE_TRAINABLE_M)
    for variant in T2T_VIT_VARIANTS:
        with torch.device("meta"):  # shapes only: counting needs no memory or initialisation
            model = T2TViTBackbone(variant)
        trainable = sum(p.numel() for p in model.parameters()) + _head_params(model.embed_dim)
        assert trainable / 1e6 == pytest.approx(REFERENCE_TRAINABLE_M[variant], abs=5e-5), variant
        # the original keeps the sinusoid and the Performer features as frozen parameters and counts them
        total = trainable + sum(b.numel() for b in model.buffers())
        published = PUBLISHED_M[variant] * 1e6
        # within 0.5%, or within the rounding of the published figure (T2T-ViT-12: 6.94M vs "6.9M")
        assert abs(total - published) <= max(0.005 * published, 0.05e6), (variant, total)
        assert round(total / 1e6, 1) == PUBLISHED_M[variant], (variant, total)


def test_swin_t_has_the_published_size(swin):
    total = sum(p.numel() for p in swin.parameters()) + _head_params(swin.embed_dim)
    assert total == 28_288_354
    assert abs(total - PUBLISHED_M["swin_tiny"] * 1e6) <= 0.005 * PUBLISHED_M["swin_tiny"] * 1e6


def test_swin_loads_timm_checkpoint_names():
    torch.manual_seed(1)
    published = SwinTransformer(num_classes=1000).state_dict()  # timm's swin_tiny_patch4_window7_224 names
    ours = _load_strict(lambda: create_backbone("swin_tiny"), SwinBackbone.remap_state_dict(published))
    for name in ("patch_embed.proj.weight", "layers.2.blocks.5.attn.relative_position_bias_table",
                 "layers.3.downsample.reduction.weight", "norm.bias"):
        assert torch.equal(ours[f"swin.{name}"], published[name])


def test_swin_loads_microsoft_checkpoint_layout():
    torch.manual_seed(2)
    timm_names = SwinTransformer(num_classes=1000).state_dict()
    # the original release merges patches at the end of a stage, names the head plainly and
    # stores the buffers that timm derives
    published = {}
    for name, value in timm_names.items():
        for stage in (1, 2, 3):
            name = name.replace(f"layers.{stage}.downsample", f"layers.{stage - 1}.downsample")
        published[name.replace("head.fc.", "head.")] = value
    published["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    published["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    ours = _load_strict(lambda: create_backbone("swin_tiny"), SwinBackbone.remap_state_dict(published))
    assert torch.equal(ours["swin.layers.1.downsample.reduction.weight"], published["layers.0.downsample.reduction.weight"])
    assert torch.equal(ours["swin.layers.3.downsample.norm.weight"], published["layers.2.downsample.norm.weight"])


def _official_t2t_shapes(embed_dim: int, depth: int, mlp_ratio: float, performer: bool) -> dict[str, tuple]:
    """Tensor names and shapes of an official T2T-ViT checkpoint (1000-class head)."""
    token, hidden = 64, int(embed_dim * mlp_ratio)
    shapes: dict[str, tuple] = {}
    for layer, width in (("attention1", 3 * 7 * 7), ("attention2", 64 * 3 * 3)):
        prefix = f"tokens_to_token.{layer}"
        shapes |= {f"{prefix}.norm1.weight": (width,), f"{prefix}.norm1.bias": (width,),
                   f"{prefix}.norm2.weight": (token,), f"{prefix}.norm2.bias": (token,)}
        if performer:
            shapes |= {f"{prefix}.kqv.weight": (3 * token, width), f"{prefix}.kqv.bias": (3 * token,),
                       f"{prefix}.proj.weight": (token, token), f"{prefix}.proj.bias": (token,),
                       f"{prefix}.mlp.0.weight": (token, token), f"{prefix}.mlp.0.bias": (token,),
                       f"{prefix}.mlp.2.weight": (token, token), f"{prefix}.mlp.2.bias": (token,),
                       f"{prefix}.w": (token // 2, token)}
        else:
            shapes |= {f"{prefix}.attn.qkv.weight": (3 * token, width),
                       f"{prefix}.attn.proj.weight": (token, token), f"{prefix}.attn.proj.bias": (token,),
                       f"{prefix}.mlp.fc1.weight": (token, token), f"{prefix}.mlp.fc1.bias": (token,),
                       f"{prefix}.mlp.fc2.weight": (token, token), f"{prefix}.mlp.fc2.bias": (token,)}
    shapes |= {"tokens_to_token.project.weight": (embed_dim, 64 * 9), "tokens_to_token.project.bias": (embed_dim,),
               "cls_token": (1, 1, embed_dim), "pos_embed": (1, 197, embed_dim),
               "norm.weight": (embed_dim,), "norm.bias": (embed_dim,),
               "head.weight": (1000, embed_dim), "head.bias": (1000,)}
    for i in range(depth):
        b = f"blocks.{i}"
        shapes |= {f"{b}.norm1.weight": (embed_dim,), f"{b}.norm1.bias": (embed_dim,),
                   f"{b}.attn.qkv.weight": (3 * embed_dim, embed_dim),
                   f"{b}.attn.proj.weight": (embed_dim, embed_dim), f"{b}.attn.proj.bias": (embed_dim,),
                   f"{b}.norm2.weight": (embed_dim,), f"{b}.norm2.bias": (embed_dim,),
                   f"{b}.mlp.fc1.weight": (hidden, embed_dim), f"{b}.mlp.fc1.bias": (hidden,),
                   f"{b}.mlp.fc2.weight": (embed_dim, hidden), f"{b}.mlp.fc2.bias": (embed_dim,)}
    return shapes


@pytest.mark.parametrize("variant, performer", [("t2t_vit_7", True), ("t2t_vit_t_14", False)])
def test_t2t_loads_official_checkpoint_names(variant, performer):
    embed_dim, depth, _, mlp_ratio, _ = T2T_VIT_VARIANTS[variant]
    gen = torch.Generator().manual_seed(3)
    published = {name: torch.randn(shape, generator=gen)
                 for name, shape in _official_t2t_shapes(embed_dim, depth, mlp_ratio, performer).items()}
    ours = _load_strict(lambda: T2TViTBackbone(variant), T2TViTBackbone.remap_state_dict(published))
    layer = "tokens_to_token.attention2"
    if performer:
        assert torch.equal(ours[f"{layer}.mlp.fc1.weight"], published[f"{layer}.mlp.0.weight"])
        assert torch.equal(ours[f"{layer}.mlp.fc2.bias"], published[f"{layer}.mlp.2.bias"])
        assert torch.equal(ours[f"{layer}.w"], published[f"{layer}.w"])
        assert torch.equal(ours[f"{layer}.kqv.weight"], published[f"{layer}.kqv.weight"])
    else:
        assert torch.equal(ours[f"{layer}.attn.qkv.weight"], published[f"{layer}.attn.qkv.weight"])
    for name in ("pos_embed", "cls_token", f"blocks.{depth - 1}.mlp.fc2.weight", "tokens_to_token.project.weight"):
        assert torch.equal(ours[name], published[name])
