"""The grouped (CPU) form of the per-patch augmentation: each in-place op equals torchvision's, the
crop and the reassembly move the right pixels, and the whole chain equals the sync-free form."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from test_patch_augment import TOL, max_diff, random_patches

from relvit.data.patch_augment import PatchAugment
from relvit.data.patch_grouped import (
    brightness_,
    contrast_,
    gather_crops,
    hue_unit,
    place_patches,
    resize_square,
    saturation_,
    sort_patches,
)

TONE = [(brightness_, TF.adjust_brightness), (contrast_, TF.adjust_contrast), (saturation_, TF.adjust_saturation)]


@pytest.mark.parametrize(("ours", "theirs"), TONE)
def test_tone_ops_match_torchvision_in_place(ours, theirs):
    x = random_patches(64, 8)
    factor = torch.linspace(0.0, 2.0, 64)
    ref = [theirs(p, float(f)) for p, f in zip(x, factor)]
    y = x.clone()
    assert ours(y, factor) is y
    assert max_diff(y, ref) <= TOL


def test_hue_matches_torchvision_and_may_write_over_its_input():
    x = random_patches(64, 8)
    shift = torch.linspace(-0.5, 0.5, 64)
    ref = [TF.adjust_hue(p, float(s)) for p, s in zip(x, shift)]
    before = x.clone()
    assert max_diff(hue_unit(x, shift), ref) <= TOL
    assert torch.equal(x, before)
    assert hue_unit(x, shift, out=x) is x and max_diff(x, ref) <= TOL


@pytest.mark.parametrize(("side", "size"), [(28, 32), (26, 32), (3, 4), (2, 4), (5, 5)])
def test_resize_matches_torchvision_resize(side, size):
    x = random_patches(6, side)
    ref = [TF.resize(p, [size, size], antialias=True) for p in x]
    assert max_diff(resize_square(x, size), ref) <= TOL


def test_crops_are_cut_from_their_patch_and_patches_go_back_in_place():
    images = torch.rand(2, 3, 64, 96)
    index = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    top, left = torch.randint(0, 5, (2, 12), generator=torch.Generator().manual_seed(1))
    crops = gather_crops(images, index, top, left, 32, 28)
    for k, m in enumerate(index.tolist()):
        b, r, c = m // 6, m % 6 // 3, m % 3
        t, lft = top[k].item(), left[k].item()
        assert torch.equal(crops[k], images[b, :, 32 * r + t : 32 * r + t + 28, 32 * c + lft : 32 * c + lft + 28])
    whole = gather_crops(images, index, torch.zeros_like(index), torch.zeros_like(index), 32, 32)
    assert torch.equal(place_patches(whole, index, 2, 2, 3), images)


def test_groups_cover_the_patches_and_share_their_draws():
    params = PatchAugment(4, "colJitter:0.8-grayScale:0.2-randomNoise:0.2").sample_params(
        3, 8, 8, generator=torch.Generator().manual_seed(2))
    index, groups = sort_patches(params.jitter, params.jitter_order, params.gray, params.noise)
    assert sorted(index.tolist()) == list(range(192))
    assert [g.start for g in groups] == [0] + [g.end for g in groups[:-1]] and groups[-1].end == 192
    for group in groups:
        members = index[group.start : group.end]
        assert (params.gray[members] == group.gray).all() and (params.noise[members] == group.noise).all()
        assert (params.jitter[members] == group.jitter).all()
        if group.jitter:
            assert (params.jitter_order[members] == torch.tensor(group.order)).all()
    assert len({(g.jitter, g.order, g.gray, g.noise) for g in groups}) == len(groups)


@pytest.mark.parametrize("crop", ["random", "centCrop", "none"])
@pytest.mark.parametrize("normalized", [False, True])
def test_grouped_form_equals_the_sync_free_form(crop, normalized):
    """The CPU's grouped form and the accelerators' sync-free form give the same images, at 224 px's
    patch size (32 px) on a few images, with every op and with normalised input (the clamps bite)."""
    aug = PatchAugment(32, "colJitter:0.8-grayScale:0.4-randomNoise:0.2", crop=crop, normalized_input=normalized)
    images = torch.rand(4, 3, 96, 64, generator=torch.Generator().manual_seed(3))
    if normalized:
        images = (images - 0.45) / 0.25
    params = aug.sample_params(4, 3, 2, generator=torch.Generator().manual_seed(4))
    assert params.jitter.any() and params.gray.any() and params.noise.any()
    grouped = aug.augment_with_params(images, params)
    assert (grouped - aug.augment_sync_free(images, params)).abs().max().item() <= TOL
