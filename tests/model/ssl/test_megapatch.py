import pytest
import torch
import torch.nn.functional as F

from relvit.model.ssl.megapatch import MegaPatch, random_cuts
from relvit.training.run import build


def test_cuts_are_distinct_patch_boundaries_and_all_occur():
    edges = random_cuts(4000, grid=8, side=5, generator=torch.Generator().manual_seed(0))
    assert edges.shape == (4000, 6)
    assert (edges[:, 0] == 0).all() and (edges[:, -1] == 8).all()
    assert (edges.diff(dim=1) >= 1).all()  # strictly increasing: distinct cuts, no empty band
    seen = torch.bincount(edges[:, 1:-1].flatten(), minlength=8)
    assert (seen[1:8] > 0).all() and seen[0] == 0  # every inner boundary gets cut at some point


def test_each_region_is_a_rectangle_of_whole_patches_resized_to_one_patch():
    p, g, s = 4, 8, 3
    # an image whose every patch is constant, holding its raster index
    cells = torch.arange(g * g, dtype=torch.float32).view(1, 1, g, g)
    image = cells.repeat_interleave(p, 2).repeat_interleave(p, 3).expand(1, 3, -1, -1).contiguous()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    out = MegaPatch(p, side=s)(image, generator=gen)
    assert out.shape == (1, 3, s * p, s * p)
    gen = torch.Generator().manual_seed(3)
    rows = random_cuts(1, g, s, gen)[0]
    cols = random_cuts(1, g, s, gen)[0]
    for i in range(s):
        for j in range(s):
            region = cells[0, 0, rows[i] : rows[i + 1], cols[j] : cols[j + 1]]
            tile = out[0, 0, i * p : (i + 1) * p, j * p : (j + 1) * p]
            # a shrunk region holds only values of its own patches, and its mean is theirs
            assert region.min() - 1e-4 <= tile.min() and tile.max() <= region.max() + 1e-4
            assert tile.mean() == pytest.approx(region.mean().item(), abs=0.51 * (region.max() - region.min()).item() + 1e-4)


def test_one_patch_regions_are_copied_exactly():
    image = torch.rand(2, 3, 16, 16)
    out = MegaPatch(4, side=4)(image)  # side == grid: every region is one patch
    assert torch.allclose(out, image, atol=1e-6)


def test_shared_cuts_reproduce_the_original_flaw():
    # cutting columns where the rows are cut makes the tiling commute with a transpose
    image = torch.rand(64, 3, 32, 32)
    t = lambda x: x.transpose(-1, -2)  # noqa: E731
    for shared in (True, False):
        m = MegaPatch(4, side=5, shared_cuts=shared)
        a = m(t(image), generator=torch.Generator().manual_seed(0))
        b = t(m(image, generator=torch.Generator().manual_seed(0)))
        assert torch.allclose(a, b, atol=1e-6) == shared


def test_bilinear_resize_is_the_original_plain_bilinear_resize():
    image = torch.rand(2, 3, 32, 32)
    out = MegaPatch(4, side=3, resize="bilinear")(image, generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    rows, cols = random_cuts(2, 8, 3, gen) * 4, random_cuts(2, 8, 3, gen) * 4
    for b in range(2):
        for i in range(3):
            for j in range(3):
                region = image[b : b + 1, :, rows[b, i] : rows[b, i + 1], cols[b, j] : cols[b, j + 1]]
                ref = F.interpolate(region, size=(4, 4), mode="bilinear", align_corners=False, antialias=False)
                assert torch.allclose(out[b, :, i * 4 : (i + 1) * 4, j * 4 : (j + 1) * 4], ref[0], atol=1e-5)
    area = MegaPatch(4, side=3)(image, generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(area, out, atol=1e-3)


def test_unknown_resize_is_refused():
    with pytest.raises(ValueError, match="resize must be one of"):
        MegaPatch(4, side=3, resize="nearest")


def test_side_larger_than_the_grid_is_refused():
    with pytest.raises(ValueError, match="side 5 must lie between 1 and the patch grid side 4"):
        MegaPatch(4, side=5)(torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize("recipe", ["corrected", "original"])
def test_megapatch_task_trains_on_side_by_side_tokens(tiny_cfg, recipe):
    run = build(tiny_cfg("task=megapatch", "task.megapatch.side=3", f"recipe={recipe}"))
    megapatch = run.datamodule.batch_transform.megapatch
    assert (megapatch.resize, megapatch.shared_cuts) == {"corrected": ("area", False), "original": ("bilinear", True)}[recipe]
    assert run.module.backbone.grid_size == 3
    assert run.module.position_head.out_features == 9
    images, labels = next(iter(run.datamodule.train_dataloader()))
    x = run.datamodule.transform_batch(images, train=True)
    assert x.shape[-1] == 3 * 4
    out = run.module.compute_losses(x, labels)
    assert torch.isfinite(out["loss"]) and "rel_loss" in out
    if recipe == "original":
        # normalised before the tiling and the per-patch ops: the blends' clamp leaves jittered
        # patches with no value below 0, the normalised mean
        torch.manual_seed(0)
        tiles = run.datamodule.batch_transform(images, train=True, augment_images=False)
        torch.manual_seed(0)
        plain = run.datamodule.batch_transform(images, train=False, augment_images=False)
        assert (tiles < 0).float().mean() < (plain < 0).float().mean()


def test_megapatch_side_is_checked_before_work(tiny_cfg):
    from relvit.config.checks import ConfigError, check_config

    with pytest.raises(ConfigError, match=r"task\.megapatch\.side=5 .*patch grid side 4"):
        check_config(tiny_cfg("task=megapatch"))


def test_evaluation_cuts_are_fixed_and_leave_the_random_stream_alone(tiny_cfg):
    run = build(tiny_cfg("task=megapatch", "task.megapatch.side=3"))
    images, _ = next(iter(run.datamodule.val_dataloader()))
    torch.manual_seed(1)
    first = run.datamodule.transform_batch(images, train=False)
    after_first = torch.rand(1)
    torch.manual_seed(2)
    second = run.datamodule.transform_batch(images, train=False)
    torch.manual_seed(1)
    assert torch.equal(first, second)
    assert torch.equal(torch.rand(1), after_first)  # evaluation drew nothing from the global stream
    trained = run.datamodule.transform_batch(images, train=True)
    assert not torch.equal(trained, first)
