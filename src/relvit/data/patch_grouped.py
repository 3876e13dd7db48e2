"""The per-patch augmentation on the CPU, with the patches grouped by their draws.

On the CPU a host sync costs nothing, so the patches can be sorted by what they drew (jitter, its op
order, grayscale, noise): every op then runs once, in place, on the contiguous slices of the patches
that drew it, instead of every op on every patch with masks blending the results in (the sync-free
form in ``relvit.data.patch_colour``, which accelerators run). The crop reads every patch's box
straight out of the images in the sorted order, one gather; the bilinear resize is a few slices
blended with fixed weights; one gather of pixel rows puts the patches back. The ops avoid what is
slow on the CPU (boolean masks, ``where``, reductions over the channels, a plane broadcast over the
channels), and the hue has a closed form with one division. The results equal the sync-free
form's, and torchvision's, within 1e-5.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from relvit.data.patch_colour import _LUMA, _per_patch, adjust_hue

# Elements per slice of the hue (and of the grayscale and noise runs): the hue's dozen intermediates
# must stay in the core's cache. The tone ops, with few intermediates, run on whole runs. 2^18 was
# the fastest of 2^15 to 2^19 at 224 px and at 32 px on a 2-core AMD EPYC VM.
CHUNK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class Group:
    """Patches [start, end) of the sorted order, which drew the same ops."""

    start: int
    end: int
    jitter: bool
    order: tuple[int, ...]  # the jitter's ops in order: 0 brightness, 1 contrast, 2 saturation, 3 hue
    gray: bool
    noise: bool


def sort_patches(jitter: Tensor, order: Tensor, gray: Tensor, noise: Tensor) -> tuple[Tensor, list[Group]]:
    """Sort the M patches by their draws: jitter, gray, noise bool [M], order int64 [M, 4] ->
    (the patches' indices in sorted order, int64 [M]; the groups of equal draws, in that order).

    The keys, major first: noise, jitter, the hue's position in the jitter, the tone ops in their
    order, gray. The jitter runs position by position, each op once on each run of patches that have it
    at that position: so the hue at any position is one run, and the tone ops form few runs."""
    hue_at = (order == 3).long().argmax(dim=1, keepdim=True)  # [M, 1]
    tones = torch.where(torch.arange(3, device=order.device) < hue_at, order[:, :3], order[:, 1:])  # [M, 3]
    code = ((hue_at[:, 0] * 4 + tones[:, 0]) * 4 + tones[:, 1]) * 4 + tones[:, 2]  # [M] in [0, 256)
    key = ((noise.long() * 2 + jitter.long()) * 256 + code * jitter.long()) * 2 + gray.long()
    sorted_key, index = key.sort(stable=True)
    keys, counts = torch.unique_consecutive(sorted_key, return_counts=True)
    groups, start = [], 0
    for value, count in zip(keys.tolist(), counts.tolist()):
        flags, code_value = divmod(value >> 1, 256)
        hue_position, *tone_ops = ((code_value >> shift) & 3 for shift in (6, 4, 2, 0))
        tone_ops.insert(hue_position, 3)
        groups.append(Group(start, start + count, bool(flags & 1), tuple(tone_ops), bool(value & 1), bool(flags & 2)))
        start += count
    return index, groups


def gather_crops(images: Tensor, index: Tensor, top: Tensor, left: Tensor, patch: int, side: int) -> Tensor:
    """images [B, C, H, W]; index int64 [K]: patches (numbered row-major, image by image); top, left
    int64 [K]: their boxes' corners inside the patch -> [K, C, side, side], one gather.

    Every box is a window of the flat images with the same strides and its own start, so all the
    windows are rows of one strided view and ``index_select`` copies the K of them.
    """
    batch, channels, height, width = images.shape
    flat = images.contiguous().view(-1)
    per_row = width // patch
    per_image = (height // patch) * per_row
    b, cell = index.div(per_image, rounding_mode="floor"), index.remainder(per_image)
    rows, cols = cell.div(per_row, rounding_mode="floor"), cell.remainder(per_row)
    start = b * (channels * height * width) + (rows * patch + top) * width + cols * patch + left
    extent = (channels - 1) * height * width + (side - 1) * width + side
    windows = flat.as_strided((flat.numel() - extent + 1, channels, side, side), (1, height * width, width, 1))
    return windows.index_select(0, start)


@functools.lru_cache(maxsize=64)
def _resize_runs(src: int, size: int) -> tuple[tuple[tuple[int, int, int], ...], tuple[float, ...]]:
    """Bilinear resize of an axis from ``src`` to ``size`` (half-pixel centres, clamped, as torch's
    align_corners=False): output i = lerp(in[i0], in[i0 + 1], w[i]). Consecutive outputs whose i0 rise
    by one form a run (start, end, i0 of start); returns the runs and the weights w."""
    coord = [min(max((i + 0.5) * src / size - 0.5, 0.0), src - 1.0) for i in range(size)]
    lower = [min(math.floor(c), max(src - 2, 0)) for c in coord]
    runs, begin = [], 0
    for i in range(1, size + 1):
        if i == size or lower[i] != lower[i - 1] + 1:
            runs.append((begin, i, lower[begin]))
            begin = i
    return tuple(runs), tuple(c - lo for c, lo in zip(coord, lower))


def resize_square(x: Tensor, size: int) -> Tensor:
    """Bilinear resize (align_corners=False, no antialiasing) of [K, C, s, s] to [K, C, size, size],
    s <= size: along each axis, a few slices blended with fixed weights; exact to float rounding."""
    num, channels, side, _ = x.shape
    if side == size:
        return x
    if side == 1:
        return x.expand(num, channels, size, size).contiguous()
    runs, weights = _resize_runs(side, size)
    weight = torch.tensor(weights, dtype=x.dtype, device=x.device)
    rows = x.new_empty(num, channels, size, side)
    for a, b, lo in runs:
        torch.lerp(x[:, :, lo : lo + b - a], x[:, :, lo + 1 : lo + 1 + b - a], weight[a:b, None], out=rows[:, :, a:b])
    out = x.new_empty(num, channels, size, size)
    for a, b, lo in runs:
        torch.lerp(rows[..., lo : lo + b - a], rows[..., lo + 1 : lo + 1 + b - a], weight[a:b], out=out[..., a:b])
    return out


def _luma_plane(x: Tensor) -> Tensor:
    """[K, 3, P, P] -> [K, P, P]; channel planes one at a time (a reduction over dim 1 is slow on the CPU)."""
    r, g, b = x.unbind(dim=1)
    return (r * _LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2])


def brightness_(x: Tensor, factor: Tensor) -> Tensor:
    """torchvision's adjust_brightness in place; x [K, 3, P, P], factor [K]."""
    return x.mul_(_per_patch(factor)).clamp_(0.0, 1.0)


def contrast_(x: Tensor, factor: Tensor) -> Tensor:
    """torchvision's adjust_contrast in place: blend with the patch's mean luma (the luma of the
    channel means: the luma is linear); x [K, 3, P, P], factor [K]."""
    means = x.flatten(2).mean(dim=2)  # [K, 3]
    grey = means[:, 0] * _LUMA[0] + means[:, 1] * _LUMA[1] + means[:, 2] * _LUMA[2]
    return x.mul_(_per_patch(factor)).add_(_per_patch((1.0 - factor) * grey)).clamp_(0.0, 1.0)


def saturation_(x: Tensor, factor: Tensor) -> Tensor:
    """torchvision's adjust_saturation in place: blend with the pixel's luma; x [K, 3, P, P], factor [K]."""
    grey = _luma_plane(x).mul_((1.0 - factor)[:, None, None])  # [K, P, P]
    x.mul_(_per_patch(factor))
    for channel in x.unbind(dim=1):
        channel.add_(grey)
    return x.clamp_(0.0, 1.0)


def hue_unit(x: Tensor, shift: Tensor, out: Tensor | None = None) -> Tensor:
    """torchvision's adjust_hue for x in [0, 1]: x [K, 3, P, P], shift [K] in turns -> [K, 3, P, P],
    written into ``out``, which may be x itself.

    With s = max - min, the hue in sixths times s is g - b where red holds the maximum, 2s + b - r for
    green, 4s + r - g for blue (ties agree modulo 6s, so any maximum will do); the channels are
    selected by sign(max - channel), which is 0 or 1, since masks and ``where`` are slow on the CPU.
    Back to RGB, channel c is min + s * clamp(||h - 2c| - 3| - 1, 0, 1) for h in [0, 6), i.e.
    (min - s) + s * clamp(..., 1, 2): the sector table in closed form. For [0, 1] input torchvision's
    clamps change nothing.
    """
    r, g, b = x.unbind(dim=1)  # [K, P, P] each
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    spread = maxc - minc
    red, green, blue = g - b, (b - r).add_(spread, alpha=2.0), (r - g).add_(spread, alpha=4.0)
    hue = torch.addcmul(green, torch.sign(maxc - g), blue.sub_(green))  # green unless green is not the maximum
    hue = torch.addcmul(red, torch.sign(maxc - r), hue.sub_(red))  # red unless red is not the maximum
    # grey pixels have hue 0 whatever the divisor
    hue.div_(spread.clamp_min(torch.finfo(x.dtype).tiny)).add_((6.0 * shift)[:, None, None]).remainder_(6.0)
    out = torch.empty_like(x) if out is None else out  # may be x: r, g, b are not read from here on
    out_r, out_g, out_b = out.unbind(dim=1)
    torch.sub(hue, 3.0, out=out_r)  # |h - 0| = h
    torch.sub(hue, 2.0, out=out_g).abs_().sub_(3.0)
    torch.sub(hue, 4.0, out=out_b).abs_().sub_(3.0)
    out.abs_().clamp_(1.0, 2.0)
    base = minc.sub_(spread)
    for channel in (out_r, out_g, out_b):
        torch.addcmul(base, spread, channel, out=channel)
    return out


def _runs(groups: list[Group], keep: Callable[[Group], bool], limit: int) -> list[tuple[int, int]]:
    """[start, end) slices covering the groups that ``keep`` selects, adjacent groups merged, each
    slice at most ``limit`` patches long."""
    merged: list[list[int]] = []
    for group in groups:
        if keep(group):
            if merged and merged[-1][1] == group.start:
                merged[-1][1] = group.end
            else:
                merged.append([group.start, group.end])
    return [(a, min(a + limit, end)) for start, end in merged for a in range(start, end, limit)]


_TONE = (brightness_, contrast_, saturation_)


def _jitter(x: Tensor, groups: list[Group], factors: Tensor, unit_range: bool, limit: int) -> Tensor:
    """ColorJitter on the sorted patches x [M, 3, P, P] in place, position by position of the op order:
    each op on the runs of patches that have it at that position (the hue in cache-sized slices)."""
    for position in range(4):
        for op in range(4):
            def keep(group: Group) -> bool:
                return group.jitter and group.order[position] == op

            for a, b in _runs(groups, keep, limit if op == 3 else x.shape[0]):
                if op < 3:
                    _TONE[op](x[a:b], factors[a:b, op])
                elif unit_range:
                    hue_unit(x[a:b], factors[a:b, 3], out=x[a:b])
                else:
                    x[a:b] = adjust_hue(x[a:b], factors[a:b, 3])
    return x


def augment_grouped(images: Tensor, ops: tuple[str, ...], crop_box: Tensor | None, jitter: Tensor,
                    jitter_order: Tensor, jitter_factors: Tensor, gray: Tensor, noise: Tensor,
                    noise_values: Tensor | None, patch: int, unit_range: bool) -> Tensor:
    """The per-patch crop and colour ops with the patches grouped by their draws.

    images float [B, 3, H, W]; crop_box int64 [M, 4] (top, left, height, width; one square size for
    all) or None; the draws of ``PatchParams``; unit_range: the images lie in [0, 1] -> [B, 3, H, W].
    """
    batch, channels, height, width = images.shape
    if images.numel() == 0:
        return images.clone()
    index, groups = sort_patches(jitter, jitter_order, gray, noise)
    side = patch if crop_box is None else int(crop_box[0, 2])
    if crop_box is None:
        top = left = torch.zeros_like(index)
    else:
        top, left = crop_box[index, 0], crop_box[index, 1]
    x = resize_square(gather_crops(images, index, top, left, patch, side), patch)  # [M, 3, P, P], sorted
    limit = max(1, CHUNK_ELEMENTS // (channels * patch * patch))
    for name in ops:
        if name == "colJitter":
            _jitter(x, groups, jitter_factors[index].to(x.dtype), unit_range, limit)
        elif name == "grayScale":
            for a, b in _runs(groups, lambda group: group.gray, limit):
                x[a:b] = _luma_plane(x[a:b]).unsqueeze(1)
        elif name == "randomNoise" and noise_values is not None:
            for a, b in _runs(groups, lambda group: group.noise, limit):
                x[a:b] = noise_values.index_select(0, index[a:b]).to(x.dtype)
    return place_patches(x, index, batch, height // patch, width // patch)


def place_patches(x: Tensor, index: Tensor, batch: int, grid_h: int, grid_w: int) -> Tensor:
    """Patches x [M, C, P, P], patch ``index[k]`` at row k -> images [B, C, grid_h * P, grid_w * P].

    One ``index_select`` of P-pixel rows, in the images' order: patch rows are contiguous in x.
    """
    num, channels, patch, _ = x.shape
    slot = torch.empty_like(index).scatter_(0, index, torch.arange(num, device=index.device))  # row of patch m
    cell = (torch.arange(batch, device=index.device).view(batch, 1, 1, 1, 1) * grid_h
            + torch.arange(grid_h, device=index.device).view(1, 1, grid_h, 1, 1)) * grid_w \
        + torch.arange(grid_w, device=index.device).view(1, 1, 1, 1, grid_w)  # [B, 1, gh, 1, gw]: patch m
    rows = (slot[cell] * channels + torch.arange(channels, device=index.device).view(1, channels, 1, 1, 1)) * patch \
        + torch.arange(patch, device=index.device).view(1, 1, 1, patch, 1)  # [B, C, gh, P, gw]
    out = x.reshape(-1, patch).index_select(0, rows.reshape(-1))
    return out.view(batch, channels, grid_h * patch, grid_w * patch)
