"""PatchAugment: each batched op equals torchvision's on the same patch, the random draws follow the
original's probabilities and ranges, and every patch is augmented on its own."""
from __future__ import annotations

import re

import pytest
import torch
import torchvision.transforms.functional as TF1
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from relvit.data.patch_augment import (
    PatchAugment,
    PatchParams,
    adjust_hue,
    adjust_tone,
    color_jitter,
    crop_resize_tlhw,
    parse_ops,
    to_grayscale,
)

TOL = 1e-5
TV_JITTER = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def random_patches(num: int, size: int, seed: int = 0) -> torch.Tensor:
    """[num, 3, size, size] in [0, 1], with the pixels that are edge cases of the hue maths:
    grey pixels, two channels tied at the maximum, and saturated 0 / 1 values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(num, 3, size, size, generator=g)
    x[:, :, 0, 0] = x[:, :1, 0, 0]  # grey
    x[:, 1, 0, 1] = x[:, 0, 0, 1]  # red == green
    x[:, 2, 1, 0] = x[:, 1, 1, 0]  # green == blue
    x[:, :, 1, 1] = (x[:, :, 1, 1] > 0.5).float()
    return x


def max_diff(ours: torch.Tensor, reference: list[torch.Tensor]) -> float:
    return (ours - torch.stack(reference)).abs().max().item()


# ---------------------------------------------------------------------------------------------
# Each op against torchvision


@pytest.mark.parametrize("crop", ["random", "centCrop"])
@pytest.mark.parametrize("size", [4, 16, 32])
def test_crop_resize_matches_torchvision_resized_crop(crop, size):
    x = random_patches(48, size)
    aug = PatchAugment(size, ops="", crop=crop)
    boxes = aug.sample_params(48, 1, 1, generator=torch.Generator().manual_seed(1)).crop_box
    ours = crop_resize_tlhw(x, boxes)
    ref = [TF.resized_crop(p, *box.tolist(), size=[size, size], antialias=True) for p, box in zip(x, boxes)]
    assert max_diff(ours, ref) <= TOL


def test_crop_resize_handles_unequal_sides_and_whole_patch():
    x = random_patches(3, 8)
    boxes = torch.tensor([[1, 2, 5, 6], [0, 0, 8, 8], [3, 1, 5, 7]])
    ref = [TF.resized_crop(p, *box.tolist(), size=[8, 8], antialias=True) for p, box in zip(x, boxes)]
    assert max_diff(crop_resize_tlhw(x, boxes), ref) <= TOL
    assert torch.allclose(crop_resize_tlhw(x[1:2], boxes[1:2]), x[1:2], atol=TOL)


@pytest.mark.parametrize("op", [0, 1, 2])
def test_tone_ops_match_torchvision(op):
    x = random_patches(64, 8)
    factor = torch.linspace(0.0, 2.0, 64)
    ours = adjust_tone(x, torch.full((64,), op), factor)
    ref = [TV_JITTER[op](p, float(f)) for p, f in zip(x, factor)]
    assert max_diff(ours, ref) <= TOL


def test_tone_ops_mixed_in_one_batch_and_factor_one_is_identity():
    x = random_patches(60, 4)
    ops = torch.arange(60) % 3
    factor = 0.6 + 0.8 * torch.rand(60, generator=torch.Generator().manual_seed(2))
    ref = [TV_JITTER[int(o)](p, float(f)) for p, o, f in zip(x, ops, factor)]
    assert max_diff(adjust_tone(x, ops, factor), ref) <= TOL
    assert torch.equal(adjust_tone(x, ops, torch.ones(60)), x)


def test_adjust_hue_matches_torchvision():
    x = random_patches(64, 8)
    shift = torch.linspace(-0.5, 0.5, 64)
    ref = [TF.adjust_hue(p, float(s)) for p, s in zip(x, shift)]
    assert max_diff(adjust_hue(x, shift), ref) <= TOL


def test_grayscale_matches_torchvision():
    x = random_patches(16, 4)
    ours = to_grayscale(x)
    assert ours.shape == x.shape
    assert max_diff(ours, [TF.rgb_to_grayscale(p, num_output_channels=3) for p in x]) <= TOL


def test_color_jitter_applies_each_patch_ops_in_its_own_order():
    x = random_patches(72, 4)
    g = torch.Generator().manual_seed(3)
    order = torch.rand(72, 4, generator=g).argsort(dim=1)
    factors = torch.cat([0.6 + 0.8 * torch.rand(72, 3, generator=g), 0.2 * torch.rand(72, 1, generator=g) - 0.1], 1)
    ref = []
    for patch, perm, fac in zip(x, order, factors):
        for op in perm.tolist():
            patch = TV_JITTER[op](patch, float(fac[op]))
        ref.append(patch)
    assert max_diff(color_jitter(x, order, factors), ref) <= TOL


def test_full_patch_pipeline_matches_torchvision_chain():
    """Crop, jitter in the fixed order hue, brightness, saturation, contrast, then grayscale, on one
    patch of a two-patch image; the other patch has every op switched off and stays as it was."""
    size = 8
    aug = PatchAugment(size, "colJitter:0.8-grayScale:0.2", crop="random")
    image = random_patches(2, size).permute(1, 2, 0, 3).reshape(1, 3, size, 2 * size)
    params = PatchParams(
        crop_box=torch.tensor([[1, 0, 7, 7], [0, 0, 8, 8]]),
        jitter=torch.tensor([True, False]),
        jitter_order=torch.tensor([[3, 0, 2, 1], [0, 1, 2, 3]]),
        jitter_factors=torch.tensor([[1.3, 0.7, 1.2, 0.08], [1.3, 0.7, 1.2, 0.08]]),
        gray=torch.tensor([True, False]),
        noise=torch.tensor([False, False]),
        noise_values=None,
    )
    out = aug.augment_with_params(image, params)
    ref = TF.resized_crop(image[0, :, :, :size], 1, 0, 7, 7, size=[size, size], antialias=True)
    ref = TF.adjust_hue(ref, 0.08)
    ref = TF.adjust_brightness(ref, 1.3)
    ref = TF.adjust_saturation(ref, 1.2)
    ref = TF.adjust_contrast(ref, 0.7)
    ref = TF.rgb_to_grayscale(ref, num_output_channels=3)
    assert (out[0, :, :, :size] - ref).abs().max().item() <= TOL
    assert torch.allclose(out[0, :, :, size:], image[0, :, :, size:], atol=TOL)


@pytest.mark.parametrize("crop", ["random", "centCrop"])
def test_whole_chain_at_224px_patch_size_matches_torchvision_per_patch(crop):
    """The default recipe at 224 px's patch size (32 px), on a few images: every patch through
    torchvision (crop resized with antialias, jitter in its order, grayscale) equals the batch."""
    p = 32
    aug = PatchAugment(p, "colJitter:0.8-grayScale:0.2", crop=crop)
    images = torch.rand(3, 3, 64, 96, generator=torch.Generator().manual_seed(15))
    images[0, :, :4, :4] = 0.5  # a grey corner, where the hue has no direction
    params = aug.sample_params(3, 2, 3, generator=torch.Generator().manual_seed(16))
    assert params.jitter.any() and params.gray.any() and not params.jitter.all()
    out = aug.augment_with_params(images, params)
    m = 0
    for b in range(3):
        for r in range(2):
            for c in range(3):
                patch = images[b, :, r * p : (r + 1) * p, c * p : (c + 1) * p]
                patch = TF.resized_crop(patch, *params.crop_box[m].tolist(), size=[p, p], antialias=True)
                if params.jitter[m]:
                    for op in params.jitter_order[m].tolist():
                        patch = TV_JITTER[op](patch, float(params.jitter_factors[m, op]))
                if params.gray[m]:
                    patch = TF.rgb_to_grayscale(patch, num_output_channels=3)
                assert (out[b, :, r * p : (r + 1) * p, c * p : (c + 1) * p] - patch).abs().max().item() <= TOL
                m += 1


# ---------------------------------------------------------------------------------------------
# Random draws


def test_op_probabilities_and_jitter_ranges():
    aug = PatchAugment(4, "colJitter:0.8-grayScale:0.2-randomNoise:0.2")
    params = aug.sample_params(5, 64, 64, generator=torch.Generator().manual_seed(4))  # 20480 patches
    assert params.jitter.float().mean().item() == pytest.approx(0.8, abs=0.015)
    assert params.gray.float().mean().item() == pytest.approx(0.2, abs=0.015)
    assert params.noise.float().mean().item() == pytest.approx(0.2, abs=0.015)
    # Every op is equally likely at every position of the order.
    position_freq = torch.nn.functional.one_hot(params.jitter_order, 4).float().mean(dim=0)  # [position, op]
    assert torch.allclose(position_freq, torch.full((4, 4), 0.25), atol=0.02)
    lo = params.jitter_factors.amin(dim=0)
    hi = params.jitter_factors.amax(dim=0)
    assert torch.allclose(lo, torch.tensor([0.6, 0.6, 0.6, -0.1]), atol=1e-3)
    assert torch.allclose(hi, torch.tensor([1.4, 1.4, 1.4, 0.1]), atol=1e-3)


@pytest.mark.parametrize(
    ("ops", "expected"), [("colJitter:0.8", 0.8), ("grayScale:0.2", 0.2), ("randomNoise:0.2", 0.2)]
)
def test_fraction_of_patches_changed(ops, expected):
    images = random_patches(40, 32, seed=5)
    out = PatchAugment(4, ops, crop="none")(images, torch.Generator().manual_seed(6))
    changed = (out - images).abs().reshape(40, 3, 8, 4, 8, 4).amax(dim=(1, 3, 5)) > 1e-6  # [B, 8, 8]
    assert changed.float().mean().item() == pytest.approx(expected, abs=0.04)


def test_random_crop_has_the_original_side_and_uniform_offsets():
    params = PatchAugment(32).sample_params(1, 50, 50, generator=torch.Generator().manual_seed(7))
    top, left, height, width = params.crop_box.T
    assert (height == 28).all() and (width == 28).all()  # round(32 / 1.15)
    for offset in (top, left):
        freq = torch.bincount(offset, minlength=5).float() / offset.numel()
        assert freq.numel() == 5 and torch.allclose(freq, torch.full((5,), 0.2), atol=0.03)


def test_cent_crop_boxes_are_squares_of_the_original_scale_inside_the_centre():
    size, region = 32, 28  # ceil(32 / 1.15)
    anchor = 2
    params = PatchAugment(size, crop="centCrop").sample_params(1, 40, 50, generator=torch.Generator().manual_seed(8))
    top, left, height, width = params.crop_box.T
    assert (top >= anchor).all() and (left >= anchor).all()
    assert (top + height <= anchor + region).all() and (left + width <= anchor + region).all()
    # RandomResizedCrop(scale=(0.85, 0.85), ratio=(1, 1)), as the original: one square size
    centre = torch.zeros(3, region, region)
    _, _, ref_h, ref_w = T.RandomResizedCrop.get_params(centre, [0.85, 0.85], [1.0, 1.0])
    assert (height == ref_h).all() and (width == ref_w).all() and ref_h == ref_w
    assert set(top.tolist()) == set(range(anchor, anchor + region - ref_h + 1))


def test_random_noise_is_standard_normal_after_normalisation():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    images = torch.rand(8, 3, 32, 32)
    out = PatchAugment(4, "randomNoise:1.0", crop="none", mean=mean, std=std)(images, torch.Generator().manual_seed(10))
    normalised = (out - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    per_channel = normalised.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.mean(dim=1), torch.zeros(3), atol=0.05)
    assert torch.allclose(per_channel.std(dim=1), torch.ones(3), atol=0.05)


# ---------------------------------------------------------------------------------------------
# Module behaviour


def test_identical_patches_come_out_different():
    tile = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(11))
    images = tile.repeat(2, 1, 8, 8)  # two identical images of 8 x 8 identical patches
    out = PatchAugment(4, "colJitter:1.0-grayScale:0.2")(images, torch.Generator().manual_seed(12))
    patches = out.reshape(2, 3, 8, 4, 8, 4).permute(0, 2, 4, 1, 3, 5).reshape(128, -1)
    assert torch.unique(patches, dim=0).shape[0] == 128
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_dtype_device_kept_and_input_untouched(dtype):
    images = torch.rand(3, 3, 16, 24).to(dtype)
    before = images.clone()
    out = PatchAugment(8, "colJitter:0.8-grayScale:0.2-randomNoise:0.2")(images)
    assert out.shape == images.shape and out.dtype == dtype and out.device == images.device
    assert torch.equal(images, before)
    assert torch.isfinite(out.float()).all()


def test_same_generator_seed_same_output():
    images = torch.rand(2, 3, 16, 16)
    aug = PatchAugment(4, crop="centCrop")
    first = aug(images, torch.Generator().manual_seed(13))
    assert torch.equal(first, aug(images, torch.Generator().manual_seed(13)))
    assert not torch.equal(first, aug(images, torch.Generator().manual_seed(14)))


@pytest.mark.gpu
def test_cuda_matches_cpu_with_the_same_params():
    aug = PatchAugment(4, "colJitter:0.8-grayScale:0.2-randomNoise:0.2", crop="centCrop")
    images = torch.rand(4, 3, 32, 32)
    params = aug.sample_params(4, 8, 8, "cuda")
    out = aug.augment_with_params(images.cuda(), params)
    cpu_params = PatchParams(*(None if v is None else v.cpu() for v in vars(params).values()))
    assert out.device.type == "cuda"
    assert torch.allclose(out.cpu(), aug.augment_with_params(images, cpu_params), atol=TOL)


def test_compiled_colour_ops_match_the_eager_ones():
    """compile=True runs the sync-free form's colour ops through torch.compile: the same output within
    1e-5 (hence the same as torchvision's, which the eager ops match op by op above)."""
    eager = PatchAugment(8, "colJitter:0.8-grayScale:0.2-randomNoise:0.2")
    compiled = PatchAugment(8, "colJitter:0.8-grayScale:0.2-randomNoise:0.2", compile=True)
    images = random_patches(6, 8).permute(1, 2, 0, 3).reshape(1, 3, 8, 48).repeat(4, 1, 2, 1)  # [4, 3, 16, 48]
    params = eager.sample_params(4, 2, 6, generator=torch.Generator().manual_seed(21))
    assert params.jitter.any() and params.gray.any() and params.noise.any()
    assert torch.allclose(compiled.augment_sync_free(images, params), eager.augment_sync_free(images, params), atol=TOL)


def test_nn_module_apply_keeps_its_meaning():
    aug = PatchAugment(4)
    seen = []
    assert aug.apply(seen.append) is aug and seen == [aug]


def test_an_empty_batch_passes_through_both_forms():
    aug = PatchAugment(4, "colJitter:0.8-grayScale:0.2-randomNoise:0.2")
    images = torch.rand(0, 3, 8, 8)
    params = aug.sample_params(0, 2, 2)
    assert aug.augment_with_params(images, params).shape == aug.augment_sync_free(images, params).shape == (0, 3, 8, 8)


def test_rejects_images_not_made_of_whole_patches():
    with pytest.raises(ValueError, match="multiples of 4"):
        PatchAugment(4)(torch.rand(1, 3, 10, 12))


# ---------------------------------------------------------------------------------------------
# Spec


def test_spec_forms():
    assert parse_ops("colJitter:0.8-grayScale:0.2") == {"colJitter": 0.8, "grayScale": 0.2}
    assert parse_ops(["randomNoise:0.2", "colJitter:0.8"]) == {"randomNoise": 0.2, "colJitter": 0.8}
    assert list(parse_ops(["randomNoise:0.2", "colJitter:0.8"])) == ["randomNoise", "colJitter"]
    assert parse_ops("") == {} and parse_ops([]) == {}


@pytest.mark.parametrize(
    ("spec", "bad"),
    [("colorJitter:0.8-grayScale:0.2", "colorJitter:0.8"), ("colJitter:0.8-grayScale", "grayScale"), ([""], "")],
)
def test_bad_name_gives_the_item_and_the_valid_names(spec, bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))) as err:
        PatchAugment(4, spec)
    assert all(name in str(err.value) for name in ("colJitter", "grayScale", "randomNoise"))


@pytest.mark.parametrize(
    ("spec", "bad"),
    [
        (["grayScale:1.5"], "grayScale:1.5"),
        (["grayScale:often"], "grayScale:often"),
        ("grayScale:0.2-grayScale:0.3", "grayScale:0.3"),
    ],
)
def test_bad_probability_or_repeat_gives_the_item(spec, bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        PatchAugment(4, spec)


def test_bad_crop_lists_the_modes():
    with pytest.raises(ValueError, match="centCrop"):
        PatchAugment(4, crop="center")


# ---------------------------------------------------------------------------------------------
# The original recipe's order: normalise, then the per-patch ops


def notes_reference(images: torch.Tensor, params: PatchParams, mean, std, p: int) -> torch.Tensor:
    """The original's per-patch pipeline written from the method notes, one patch at a time with
    torchvision's (v1) tensor ops: normalise the image, then per patch a crop resized back
    bilinearly, colour jitter in the patch's order (blends clamp to [0, 1]), grayscale (no clamp)."""
    x = (images.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    out = x.clone()
    b, _, h, w = x.shape
    ops = (TF1.adjust_brightness, TF1.adjust_contrast, TF1.adjust_saturation, TF1.adjust_hue)
    m = 0
    for i in range(b):
        for r in range(h // p):
            for c in range(w // p):
                patch = x[i, :, r * p : (r + 1) * p, c * p : (c + 1) * p]
                patch = TF1.resize(TF1.crop(patch, *params.crop_box[m].tolist()), [p, p], antialias=False)
                if params.jitter[m]:
                    for op in params.jitter_order[m].tolist():
                        patch = ops[op](patch, float(params.jitter_factors[m, op]))
                if params.gray[m]:
                    patch = TF1.rgb_to_grayscale(patch, num_output_channels=3)
                out[i, :, r * p : (r + 1) * p, c * p : (c + 1) * p] = patch
                m += 1
    return out


def test_original_recipe_pipeline_matches_a_per_patch_reference(tiny_cfg):
    from hydra.utils import instantiate

    cfg = tiny_cfg("recipe=original", "task=upstream")
    dm = instantiate(cfg.data)
    augment = dm.batch_transform.patch_augment
    assert augment.normalized_input
    p = cfg.dataset.patch_size
    # colour images, so that the hue and the clamps see every case, plus a few grey ones like digits
    images = torch.randint(0, 256, (6, 3, 16, 16), generator=torch.Generator().manual_seed(13), dtype=torch.uint8)
    images[:2] = images[:2, :1]
    torch.manual_seed(14)
    ours = dm.batch_transform(images, train=True, augment_images=False)
    torch.manual_seed(14)
    params = augment.sample_params(6, 16 // p, 16 // p)
    ref = notes_reference(images, params, list(cfg.dataset.mean), list(cfg.dataset.std), p)
    assert (ours - ref).abs().max().item() <= TOL
    # the clamps bite: jittered patches lose every normalised value below 0
    normalised = (images.float() / 255 - torch.tensor(list(cfg.dataset.mean))[:, None, None]) / torch.tensor(list(cfg.dataset.std))[:, None, None]
    assert normalised.min() < -0.5 and (ours < 0).float().mean() < (normalised < 0).float().mean() / 2
