"""Published weight files (.pth, .pt, .safetensors) of each family load into the right tensors."""
import logging

import pytest
import torch
from safetensors.torch import save_file
from timm.layers import resample_patch_embed
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from relvit.backbones.swin import SwinBackbone
from relvit.backbones.t2t_vit import T2TViTBackbone
from relvit.backbones.vit import ViTBackbone
from relvit.model.module import RelViTModule
from relvit.model.task import TaskSpec
from relvit.runs.checkpoints import load_pretrained
from relvit.runs.weight_resampling import CannotResample, resample

DOWNSTREAM = TaskSpec(name="downstream", supervised=True, relations=False, positions=False, monitor="val/acc", monitor_mode="max")


def module_around(backbone):
    return RelViTModule(backbone, DOWNSTREAM, num_classes=10, optimizer=None, scheduler=None)


def save(state, path):
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


@pytest.mark.parametrize("suffix,wrap", [(".pth", "model"), (".pt", None), (".safetensors", None)])
def test_timm_and_deit_vit_weights(tmp_path, suffix, wrap):
    torch.manual_seed(1)
    published = VisionTransformer(img_size=32, patch_size=4, embed_dim=24, depth=2, num_heads=2, num_classes=1000)
    state = published.state_dict()
    path = tmp_path / f"vit{suffix}"
    save({"model": state} if wrap else state, path)
    module = module_around(ViTBackbone(32, 4, 24, 2, 2))
    report = load_pretrained(module, path)
    own = module.state_dict()
    for name in ("blocks.1.attn.qkv.weight", "patch_embed.proj.weight", "pos_embed", "cls_token", "norm.weight"):
        assert torch.equal(own[f"backbone.vit.{name}"], state[name]), name
    assert not torch.equal(own["classifier.fc.weight"][:10], state["head.weight"][:10, : own["classifier.fc.weight"].shape[1]])
    assert all(n.startswith("classifier.") for n in report.missing)


def test_timm_swin_weights(tmp_path):
    torch.manual_seed(2)
    kwargs = dict(img_size=64, patch_size=4, embed_dim=24, depths=(1, 1), num_heads=(1, 2), window_size=4)
    published = SwinTransformer(num_classes=1000, **kwargs)
    state = published.state_dict()
    path = tmp_path / "swin.pth"
    torch.save(state, path)
    module = module_around(SwinBackbone(image_size=64, embed_dim=24, depths=(1, 1), num_heads=(1, 2), window_size=4))
    report = load_pretrained(module, path)
    own = module.state_dict()
    for name in ("layers.1.blocks.0.attn.qkv.weight", "layers.1.downsample.reduction.weight", "patch_embed.proj.weight", "norm.bias"):
        assert torch.equal(own[f"backbone.swin.{name}"], state[name]), name
    assert not any(n.startswith("backbone.") for n in report.missing)


def test_official_t2t_vit_weights(tmp_path):
    torch.manual_seed(3)
    source = T2TViTBackbone("t2t_vit_7", image_size=64)
    state = {}
    for name, value in source.state_dict().items():
        if name.startswith("tokens_to_token.attention"):  # the official Performer MLP is a Sequential
            name = name.replace(".mlp.fc1.", ".mlp.0.").replace(".mlp.fc2.", ".mlp.2.")
        state[name] = value.clone()
    state["head.weight"], state["head.bias"] = torch.randn(1000, 256), torch.randn(1000)
    path = tmp_path / "t2t.pth.tar.pth"
    torch.save({"state_dict_ema": state}, path)
    torch.manual_seed(4)
    module = module_around(T2TViTBackbone("t2t_vit_7", image_size=64))
    report = load_pretrained(module, path)
    own = module.state_dict()
    assert torch.equal(own["backbone.tokens_to_token.attention1.mlp.fc1.weight"], state["tokens_to_token.attention1.mlp.0.weight"])
    assert torch.equal(own["backbone.blocks.6.mlp.fc2.weight"], state["blocks.6.mlp.fc2.weight"])
    assert not any(n.startswith("backbone.") for n in report.missing)


def test_vit_weights_of_another_resolution_are_resampled(tmp_path, caplog):
    """A 224 px / 16 px file (DeiT key layout) into a 32 px / 4 px run: the grid 14 x 14 -> 8 x 8
    and the 16 px kernel -> 4 px are resampled, not skipped; a width that differs is still skipped."""
    torch.manual_seed(5)
    published = VisionTransformer(img_size=224, patch_size=16, embed_dim=24, depth=2, num_heads=2, num_classes=1000)
    state = published.state_dict()
    path = tmp_path / "deit_224.pth"
    torch.save({"model": state}, path)
    module = module_around(ViTBackbone(32, 4, 24, 2, 2))
    with caplog.at_level(logging.INFO, logger="relvit"):
        report = load_pretrained(module, path)
    assert report.shape_mismatch == [] and report.unexpected == []
    assert report.not_mapped == ["head.weight", "head.bias"]  # the published classifier, reported as skipped
    assert "2 skipped (the published classifier head or buffers the backbone derives)" in caplog.text
    assert "skipped, the published classifier head or derived buffers: head.weight, head.bias" in caplog.text
    assert sorted(report.resampled) == [
        "backbone.vit.patch_embed.proj.weight (24, 3, 16, 16) -> (24, 3, 4, 4)",
        "backbone.vit.pos_embed (1, 197, 24) -> (1, 65, 24)",
    ]
    assert {"backbone.vit.pos_embed", "backbone.vit.patch_embed.proj.weight"} <= set(report.loaded)
    own = module.state_dict()
    pos = own["backbone.vit.pos_embed"]
    assert torch.equal(pos[:, 0], state["pos_embed"][:, 0])  # the CLS slot is kept, not interpolated
    # the grid is interpolated as an image: the 8 x 8 result, upsampled back, stays close to the 14 x 14 original
    grid = state["pos_embed"][0, 1:].reshape(1, 14, 14, 24).permute(0, 3, 1, 2)
    small = pos[0, 1:].reshape(1, 8, 8, 24).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bicubic", antialias=True, align_corners=False)
    assert torch.allclose(small, expected, atol=1e-5)
    # the kernel is timm's pseudo-inverse resize (FlexiViT), not a crop or the run's own init
    assert torch.allclose(own["backbone.vit.patch_embed.proj.weight"],
                          resample_patch_embed(state["patch_embed.proj.weight"], [4, 4]), atol=1e-6)


def test_vit_without_cls_token_resamples_the_whole_grid(tmp_path):
    published = VisionTransformer(img_size=64, patch_size=16, embed_dim=24, depth=1, num_heads=2, class_token=False,
                                  global_pool="avg", num_classes=0)
    path = tmp_path / "vit_nocls.pth"
    torch.save(published.state_dict(), path)
    module = module_around(ViTBackbone(32, 4, 24, 1, 2, class_token=False))
    report = load_pretrained(module, path)
    assert "backbone.vit.pos_embed (1, 16, 24) -> (1, 64, 24)" in report.resampled
    assert report.shape_mismatch == [] and "backbone.vit.pos_embed" in report.loaded


def test_swin_tables_follow_the_window(tmp_path):
    """Swin weights with a 7-wide window into a run whose window is 4: every relative-position
    table (13 x 13 -> 7 x 7 offsets) is resampled; a table with another number of heads is skipped."""
    torch.manual_seed(6)
    kwargs = dict(embed_dim=24, depths=(1, 1), num_heads=(1, 2))
    published = SwinTransformer(img_size=56, patch_size=4, window_size=7, num_classes=0, **kwargs)
    path = tmp_path / "swin_w7.pth"
    torch.save(published.state_dict(), path)
    module = module_around(SwinBackbone(image_size=64, window_size=4, **kwargs))
    report = load_pretrained(module, path)
    tables = [n for n in report.resampled if "relative_position_bias_table" in n]
    assert len(tables) == 2 and all("(169, " in n and "-> (49, " in n for n in tables)
    assert report.shape_mismatch == []
    assert not any(n.startswith("backbone.") for n in report.missing)


def test_what_cannot_be_resampled_is_skipped_with_the_reason():
    module = module_around(SwinBackbone(image_size=64, embed_dim=24, depths=(1, 1), num_heads=(1, 2), window_size=4))
    name = "backbone.swin.layers.0.blocks.0.attn.relative_position_bias_table"
    own = module.state_dict()[name]  # [49, 1]
    with pytest.raises(CannotResample, match="number of heads differs"):
        resample(name, torch.zeros(169, 3), own, module)
    vit = module_around(ViTBackbone(32, 4, 24, 1, 2))
    with pytest.raises(CannotResample, match="width differs"):
        resample("backbone.vit.pos_embed", torch.zeros(1, 197, 48), vit.state_dict()["backbone.vit.pos_embed"], vit)
    with pytest.raises(CannotResample, match="not a position or patch embedding"):
        resample("backbone.vit.norm.weight", torch.zeros(48), torch.zeros(24), vit)


def test_a_tensor_that_claims_more_elements_than_its_storage_is_refused(tmp_path):
    from relvit.runs.checkpoints import CorruptCheckpointError, read_checkpoint

    path = tmp_path / "stride0.ckpt"  # one float viewed as 10^10: 1.6 KB on disk, 40 GB on the first copy
    torch.save({"state_dict": {"w": torch.zeros(1).as_strided((100_000, 100_000), (0, 0))}}, path)
    assert path.stat().st_size < 4096
    with pytest.raises(CorruptCheckpointError, match=r"tensor state_dict\.w claims \(100000, 100000\) = 10000000000 elements"):
        read_checkpoint(path)


def test_a_compressed_record_that_unpacks_past_the_file_is_refused_before_loading(tmp_path):
    import zipfile

    from relvit.runs.checkpoints import CorruptCheckpointError, read_checkpoint

    honest = tmp_path / "honest.ckpt"
    torch.save({"w": torch.zeros(2_000_000)}, honest)
    bomb = tmp_path / "bomb.ckpt"  # the same records deflated: 8 MB of zeros in a few KB
    with zipfile.ZipFile(honest) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as packed:
        for name in source.namelist():
            packed.writestr(name, source.read(name))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(CorruptCheckpointError, match="is compressed"):
        read_checkpoint(bomb)
    assert read_checkpoint(honest)["w"].numel() == 2_000_000


def test_views_of_a_saved_storage_still_load(tmp_path):
    from relvit.runs.checkpoints import read_checkpoint

    base = torch.arange(12.0).reshape(3, 4)
    path = tmp_path / "views.ckpt"
    torch.save({"column": base[:, 1], "tail": base.view(-1)[6:], "scalar": torch.tensor(3.0)}, path)
    content = read_checkpoint(path)
    assert content["column"].tolist() == [1.0, 5.0, 9.0] and content["tail"].tolist() == [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
