"""Every backbone config trains one optimisation step of upstream, downstream and joint at its
native image size, and the SSL heads follow its token grid."""
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from relvit.model.module import RelViTModule
from relvit.model.task import TaskSpec

from conftest import CONF, compose_config

BACKBONES = sorted(p.stem for p in (CONF / "backbone").glob("*.yaml"))
# ViTs train on 32 px CIFAR images (8 x 8 patches), Swin and T2T-ViT on 224 px (7 x 7 tokens)
NATIVE = {name: ("cifar10", 8) if name.startswith("vit") else ("cifar10_224", 7) for name in BACKBONES}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            tmp = tmp_path_factory.mktemp(name)
            dataset, _ = NATIVE[name]
            cfg = compose_config(tmp, [f"backbone={name}", f"dataset={dataset}"])
            torch.manual_seed(0)
            cache.clear()  # one large model in memory at a time
            cache[name] = (cfg, instantiate(cfg.backbone))
        return cache[name]

    return get


@pytest.mark.parametrize("name", BACKBONES)
def test_token_grid(built, name):
    cfg, backbone = built(name)
    _, grid = NATIVE[name]
    assert backbone.grid_size == grid
    size = cfg.dataset.image_size
    with torch.no_grad():
        cls, patches = backbone.eval()(torch.rand(1, 3, size, size))
    assert patches.shape == (1, grid * grid, backbone.embed_dim)
    assert (cls is not None) == backbone.has_cls_token


@pytest.mark.parametrize("task", ["upstream", "downstream", "joint"])
@pytest.mark.parametrize("name", BACKBONES)
def test_one_step_of_each_task(built, tmp_path, name, task):
    cfg, backbone = built(name)
    task_cfg = compose_config(tmp_path, [f"task={task}"]).task
    spec = TaskSpec.from_config(OmegaConf.to_container(task_cfg, resolve=True))
    module = RelViTModule(backbone, spec, num_classes=10, optimizer=None, scheduler=None).train()
    size = cfg.dataset.image_size
    images, labels = torch.randn(2, 3, size, size), torch.tensor([1, 7])
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    before = {n: p.detach().clone() for n, p in module.backbone.named_parameters() if p.requires_grad}
    out = module.compute_losses(images, labels)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    optimizer.step()
    moved = [n for n, p in module.backbone.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert len(moved) > 0.9 * len(before)  # the gradients reached (nearly) every backbone tensor
    if spec.relations:
        assert module.relation_head(backbone(images[:1])[1]).shape[-1] == backbone.num_patches
    if spec.supervised and not backbone.has_cls_token:
        assert module.classifier.pool == "mean"  # Swin classifies from mean-pooled tokens
