"""Per-patch augmentation of RelViT upstream pre-training, batched over images and patches.

RelViT augments every P x P patch of a training image on its own (crop, colour jitter, grayscale,
optionally noise), so that the network must place patches from their content rather than from
low-level continuity across patch borders. The original looped in Python over every patch with
torchvision transforms. Here every random draw is a per-patch tensor and the ops run batched on the
images' device, with the same maths as the torchvision ops (checked op by op in
tests/data/test_patch_augment.py and tests/data/test_patch_grouped.py), in one of two forms:

- sync-free (accelerators): the M = B * N patches form one [M, 3, P, P] tensor and every op runs on
  all of them, blended by the draws; no host-device sync. Colour ops in ``relvit.data.patch_colour``;
  ``compile=True`` runs them compiled.
- grouped (CPU): the patches are sorted by their draws and each op runs only on the patches that
  drew it, in cache-sized slices (``relvit.data.patch_grouped``); several times faster on a CPU.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from relvit.data.patch_colour import (  # noqa: F401 -- the ops are part of this module's interface
    adjust_hue,
    adjust_tone,
    color_jitter,
    recolour,
    to_grayscale,
)
from relvit.data.patch_grouped import augment_grouped

OP_NAMES = ("colJitter", "grayScale", "randomNoise")
CROP_MODES = ("random", "centCrop", "none")

# The crop keeps a side of P / 1.15 of the patch, as in the original.
CROP_SHRINK = 1.15
# ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1): uniform ranges of the three
# factors and of the hue shift.
JITTER_RANGES = ((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
# centCrop: RandomResizedCrop(P, scale=(0.85, 0.85), ratio=(1, 1)), as the original: square boxes.
CENT_CROP_SCALE = 0.85


def parse_ops(spec: str | Sequence[str]) -> dict[str, float]:
    """``"colJitter:0.8-grayScale:0.2"`` or ``["colJitter:0.8", "grayScale:0.2"]`` -> ``{name: probability}``.

    The order of the spec is the order the ops are applied in; an empty spec means no colour op.
    """
    items = (spec.split("-") if spec else []) if isinstance(spec, str) else list(spec)
    ops: dict[str, float] = {}
    for item in items:
        name, sep, prob_text = str(item).partition(":")
        if name not in OP_NAMES or not sep:
            raise ValueError(
                f"bad patch augmentation {item!r}: expected 'name:probability' with name one of {list(OP_NAMES)}"
            )
        try:
            prob = float(prob_text)
        except ValueError:
            prob = math.nan
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"bad patch augmentation {item!r}: the probability must be a number in [0, 1]")
        if name in ops:
            raise ValueError(f"bad patch augmentation {item!r}: {name} is given twice")
        ops[name] = prob
    return ops


@dataclass
class PatchParams:
    """Random draws for M = B * grid_h * grid_w patches, ordered image by image, row-major within an image."""

    crop_box: Tensor | None  # int64 [M, 4]: top, left, height, width inside the patch; None when crop="none"
    jitter: Tensor  # bool [M]: colour jitter applied
    jitter_order: Tensor  # int64 [M, 4]: op at each position, 0 brightness, 1 contrast, 2 saturation, 3 hue
    jitter_factors: Tensor  # float32 [M, 4]: brightness, contrast, saturation factors and hue shift
    gray: Tensor  # bool [M]
    noise: Tensor  # bool [M]
    noise_values: Tensor | None  # float32 [M, 3, P, P] in the input's units; None without randomNoise


def _sample_coords(start: Tensor, length: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """Normalised grid_sample coordinates resizing [start, start + length) of an axis back to ``size``.

    start, length int64 [M] -> [M, size]. Half-pixel centres, clamped to the crop as torch's bilinear
    upsampling clamps them (align_corners=False); the crop is never larger than the patch, so
    torchvision's antialiasing never changes the weights.
    """
    pos = torch.arange(size, device=start.device, dtype=dtype)
    length = length.to(dtype)[:, None]
    src = ((pos + 0.5) * (length / size) - 0.5).clamp_(min=0.0).minimum(length - 1.0)
    return (2.0 * (start[:, None] + src) + 1.0) / size - 1.0


def crop_resize_tlhw(x: Tensor, box: Tensor) -> Tensor:
    """Crop each patch to its box and resize it back bilinearly, as torchvision's resized_crop.

    x [M, C, P, P], box int64 [M, 4] (top, left, height, width) -> [M, C, P, P]. One grid_sample with a
    per-patch grid: unlike batched matmuls of tiny matrices, its cost does not blow up at P = 4.
    """
    num, _, size, _ = x.shape
    ys = _sample_coords(box[:, 0], box[:, 2], size, x.dtype)  # [M, P]
    xs = _sample_coords(box[:, 1], box[:, 3], size, x.dtype)
    grid = torch.stack([xs[:, None, :].expand(num, size, size), ys[:, :, None].expand(num, size, size)], dim=-1)
    # Every sample point lies inside the patch; "border" only keeps rounding at the edge from blending in zeros.
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _one_square_size(box: Tensor | None) -> bool:
    """No crop, or every box int64 [M, 4] is a square of the same side (what the crop modes draw)."""
    return box is None or bool((box[:, 2:] == box[:1, 2:3]).all())


#: How the per-patch ops run (``PatchAugment(form=...)``, ``task.patch_augment.form``).
PATCH_FORMS = ("auto", "grouped", "sync_free")


def patch_form(form: str, device: torch.device) -> str:
    """The form a batch on ``device`` is augmented in: ``auto`` is grouped on the CPU (faster there)
    and sync-free on accelerators (no host-device sync)."""
    if form != "auto":
        return form
    return "grouped" if device.type == "cpu" else "sync_free"


# ---------------------------------------------------------------------------------------------


class PatchAugment(torch.nn.Module):
    """Augment every patch of every image independently (RelViT upstream training).

    patch_size: P, the side of the non-overlapping patch grid.
    ops: colour ops with probabilities, ``"colJitter:0.8-grayScale:0.2"`` or a list of ``name:p``;
        names colJitter (ColorJitter(0.4, 0.4, 0.4, 0.1)), grayScale (3-channel), randomNoise
        (patch replaced by noise that is N(0, 1) after normalisation with mean/std); applied in order.
        The noise leaves [0, 1] and the colour ops assume [0, 1], so randomNoise belongs last.
    crop: "random" (crop of side round(P / 1.15) at a uniform offset), "centCrop" (centre crop of side
        ceil(P / 1.15), then RandomResizedCrop(P, scale=(0.85, 0.85), ratio=(1, 1)) inside it) or
        "none"; the crop is resized back to P x P and comes before the colour ops.
    mean, std: the per-channel normalisation applied after this module; only randomNoise uses them.
    normalized_input: the images arrive already normalised, the original's order: colour blends then
        clamp them to [0, 1] as torchvision does, and randomNoise draws N(0, 1) directly.
    compile: run the colour ops of the sync-free form (accelerators) through torch.compile (the same
        results within 1e-5, after a compilation of some seconds per batch shape). The CPU runs the
        grouped form, which is faster there than the compiled sync-free one, and compiles nothing.
    form: ``auto`` (grouped on the CPU, sync-free on accelerators: ``patch_form``), ``grouped`` or
        ``sync_free`` on any device (the CPU runs an accelerator's form this way, and the tests do).
    """

    def __init__(
        self,
        patch_size: int,
        ops: str | Sequence[str] = "colJitter:0.8-grayScale:0.2",
        crop: str = "random",
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        normalized_input: bool = False,
        compile: bool = False,
        form: str = "auto",
    ) -> None:
        super().__init__()
        if form not in PATCH_FORMS:
            raise ValueError(f"bad form {form!r}: expected one of {list(PATCH_FORMS)}")
        if patch_size < 1:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        if crop not in CROP_MODES:
            raise ValueError(f"bad crop {crop!r}: expected one of {list(CROP_MODES)}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {list(mean)} and {list(std)}")
        self.patch_size = patch_size
        self.ops = parse_ops(ops)
        self.crop = crop
        # Python floats, not buffers: no host-to-device copy per call, whatever device the images are on.
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.normalized_input = bool(normalized_input)
        self.compile_ops = bool(compile)
        self.form = form

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, ops={self.ops}, crop={self.crop!r}, normalized_input={self.normalized_input}, compile={self.compile_ops}, form={self.form!r}"

    def _crop_boxes(self, num: int, device: torch.device | str, generator: torch.Generator | None) -> Tensor | None:
        """int64 [num, 4] boxes (top, left, height, width) inside a patch, or None for crop="none"."""
        p = self.patch_size
        if self.crop == "none":
            return None
        if self.crop == "random":
            side = round(p / CROP_SHRINK)
            offsets = torch.randint(0, p - side + 1, (num, 2), device=device, generator=generator)
            return torch.cat([offsets, torch.full_like(offsets, side)], dim=1)

        # centCrop: a centre region of side ceil(P / 1.15), then a square of area 0.85 of it at a
        # uniform offset (with ratio (1, 1) torchvision's first RandomResizedCrop attempt always fits)
        region = math.ceil(p / CROP_SHRINK)
        anchor = round((p - region) / 2.0)
        side = round(math.sqrt(CENT_CROP_SCALE * region * region))
        offsets = torch.randint(0, region - side + 1, (num, 2), device=device, generator=generator)
        return torch.cat([anchor + offsets, torch.full_like(offsets, side)], dim=1)

    def sample_params(
        self,
        batch: int,
        grid_h: int,
        grid_w: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> PatchParams:
        """Draw the parameters of every patch of ``batch`` images with a grid_h x grid_w patch grid."""
        num = batch * grid_h * grid_w
        p = self.patch_size

        def bernoulli(prob: float) -> Tensor:
            return torch.rand(num, device=device, generator=generator) < prob

        crop_box = self._crop_boxes(num, device, generator)
        jitter = bernoulli(self.ops.get("colJitter", 0.0))
        # A random permutation per patch: argsort of i.i.d. uniforms.
        order = torch.rand(num, 4, device=device, generator=generator).argsort(dim=1)
        u = torch.rand(num, 4, device=device, generator=generator)
        factors = torch.stack([lo + (hi - lo) * u[:, k] for k, (lo, hi) in enumerate(JITTER_RANGES)], dim=1)
        gray = bernoulli(self.ops.get("grayScale", 0.0))
        noise = bernoulli(self.ops.get("randomNoise", 0.0))
        noise_values = None
        if "randomNoise" in self.ops:
            noise_values = torch.randn(num, 3, p, p, device=device, generator=generator)
            if not self.normalized_input:  # in [0, 1]-image units, N(0, 1) once normalised
                for c in range(3):
                    noise_values[:, c].mul_(self.std[c]).add_(self.mean[c])
        return PatchParams(crop_box, jitter, order, factors, gray, noise, noise_values)

    def augment_with_params(self, images: Tensor, params: PatchParams) -> Tensor:
        """images float [B, 3, H, W] (in [0, 1], or normalised with normalized_input) and their patches'
        parameters -> [B, 3, H, W]. In the grouped form (the CPU's) the patches are grouped by their
        draws (one host sync, free there); in the sync-free form (accelerators'), or for boxes of
        several sizes, this is ``augment_sync_free``."""
        self._check(images)
        if patch_form(self.form, images.device) == "sync_free" or not _one_square_size(params.crop_box):
            return self.augment_sync_free(images, params)
        # Half precision inputs are augmented in float32, as torchvision's hue does.
        dtype = torch.promote_types(images.dtype, torch.float32)
        out = augment_grouped(images.to(dtype), tuple(self.ops), params.crop_box, params.jitter,
                              params.jitter_order, params.jitter_factors, params.gray, params.noise,
                              params.noise_values, self.patch_size, unit_range=not self.normalized_input)
        return out.to(images.dtype)

    def augment_sync_free(self, images: Tensor, params: PatchParams) -> Tensor:
        """The form accelerators run, on any device: every op on every patch, blended by the per-patch
        draws, with no host-device sync; the colour ops compiled with ``compile``. Same shapes and
        results as ``augment_with_params``."""
        self._check(images)
        batch, _, height, width = images.shape
        p = self.patch_size
        gh, gw = height // p, width // p
        dtype = torch.promote_types(images.dtype, torch.float32)
        x = images.to(dtype).reshape(batch, 3, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, 3, p, p)

        if params.crop_box is not None:
            x = crop_resize_tlhw(x, params.crop_box)
        x = recolour(x, tuple(self.ops), params.jitter, params.jitter_order, params.jitter_factors, params.gray,
                     params.noise, params.noise_values, compiled=self.compile_ops)

        x = x.reshape(batch, gh, gw, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(batch, 3, height, width)
        return x.to(images.dtype)

    def _check(self, images: Tensor) -> None:
        """Float [B, 3, H, W] images made of whole patches, or a clear error naming what was given."""
        if not images.is_floating_point():
            raise TypeError(f"PatchAugment needs float images, got {images.dtype}")
        _, channels, height, width = images.shape
        p = self.patch_size
        if channels != 3 or height % p or width % p:
            raise ValueError(
                f"PatchAugment needs [B, 3, H, W] images with H and W multiples of {p}, got {list(images.shape)}"
            )

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """images float [B, 3, H, W] (H, W multiples of patch_size) -> same shape, device and dtype;
        every patch of every image draws its own random parameters."""
        batch, _, height, width = images.shape
        p = self.patch_size
        params = self.sample_params(batch, height // p, width // p, images.device, generator)
        return self.augment_with_params(images, params)
