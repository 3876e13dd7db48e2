"""Published weight files (.pth, .pt, .safetensors) of each family load into the right tensors."""
import pytest
import torch
from safetensors.torch import save_file
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from relvit.backbones.swin import SwinBackbone
from relvit.backbones.t2t_vit import T2TViTBackbone
from relvit.backbones.vit import ViTBackbone
from relvit.checkpoints import load_pretrained
from relvit.module import RelViTModule
from relvit.task import TaskSpec

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
