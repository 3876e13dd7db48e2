"""The colour ops of the per-patch augmentation in its sync-free form (what accelerators run), batched
over patches [M, 3, P, P] with per-patch parameters [M], each with the maths of its torchvision
counterpart.

``recolour`` runs the spec's ops in order on every patch, blended by the draws, with no host-device
sync. Eager, every op is a few whole passes over the batch; the compiled form
(``recolour(..., compiled=True)``) fuses them into a handful of loops. The CPU runs the grouped form
of ``relvit.data.patch_grouped`` instead, which skips what a patch did not draw.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import Tensor

log = logging.getLogger(__name__)

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)


def _per_patch(values: Tensor) -> Tensor:
    """[M] -> [M, 1, 1, 1], to broadcast over channels and pixels."""
    return values[:, None, None, None]


def _luma(x: Tensor) -> Tensor:
    """[M, 3, P, P] -> [M, 1, P, P]."""
    r, g, b = x.unbind(dim=1)
    return (r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]).unsqueeze(1)


def to_grayscale(x: Tensor) -> Tensor:
    """[M, 3, P, P] -> [M, 3, P, P] with the luma in all three channels."""
    return _luma(x).expand_as(x)


def adjust_tone(x: Tensor, op: Tensor, factor: Tensor, active: Tensor | None = None) -> Tensor:
    """Brightness (op 0), contrast (op 1) or saturation (op 2), chosen per patch, as torchvision's.

    x [M, 3, P, P], op int64 [M], factor [M], active bool [M] or None (all) -> [M, 3, P, P]. All three
    are clamp(x * f + g * (1 - f), 0, 1) with g = 0, the patch's mean luma or the pixel's luma, so one
    blend serves every patch. Inactive patches pass with factor 1 and no clamp: for normalised
    patches (the original's order) a clamp is not an identity.
    """
    op, f = _per_patch(op), _per_patch(factor)
    luma = _luma(x)  # [M, 1, P, P]
    mean = luma.mean(dim=(-2, -1), keepdim=True)  # [M, 1, 1, 1]
    # g * (1 - f) as luma * a + b with per-patch a, b: only [M, 1, P, P] work before the one full blend.
    a = (op == 2) * (1.0 - f)
    b = (op == 1) * (1.0 - f) * mean
    out = torch.addcmul(luma * a + b, x, f)
    if active is None:
        return out.clamp_(0.0, 1.0)
    on = _per_patch(active)
    return out.clamp_(torch.where(on, 0.0, -math.inf).to(x.dtype), torch.where(on, 1.0, math.inf).to(x.dtype))


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift`` turns, as torchvision's adjust_hue; x [M, 3, P, P], shift [M] -> [M, 3, P, P].

    The hue is kept in sixths of a turn, h in [0, 6), with red, green and blue at 0, 2 and 4. Back to
    RGB, a channel is max - (max - min) * clamp(d - 1, 0, 1) with d the circular distance from h to
    the channel's own hue: torchvision's HSV sector table in closed form (no gather, no saturation
    division, since v * s = max - min). Like torchvision, it clamps to [0, 1] every channel but the one
    its sector gives the maximum: a no-op in [0, 1], what the original does to normalised patches.
    """
    r, g, b = x.unbind(dim=1)
    minc, maxc = torch.aminmax(x, dim=1)  # [M, P, P]
    spread = maxc - minc
    red_max, green_max = maxc == r, maxc == g
    # Grey pixels (spread 0) have numerator 0, so any nonzero divisor gives them hue 0.
    num = torch.where(red_max, g - b, torch.where(green_max, b - r, r - g))
    sector = torch.where(red_max, 0.0, torch.where(green_max, 2.0, 4.0))
    hue = sector + num / torch.where(spread == 0, 1.0, spread)  # [M, P, P], in [-1, 5]
    hue = (hue + 6.0 * shift[:, None, None]).remainder_(6.0)

    centre = torch.arange(0.0, 6.0, 2.0, device=x.device, dtype=x.dtype)[:, None, None]  # [3, 1, 1]: 0, 2, 4
    dist = (hue.unsqueeze(1) - centre).abs_()  # [M, 3, P, P], in [0, 6)
    ramp = torch.minimum(dist - 1.0, 5.0 - dist).clamp_(0.0, 1.0)
    out = torch.addcmul(maxc.unsqueeze(1), spread.unsqueeze(1), ramp, value=-1.0).clamp_(0.0, 1.0)
    # sectors [5, 1), [1, 3), [3, 5) give the maximum to red, green, blue
    top = torch.div(hue + 1.0, 2.0, rounding_mode="floor").remainder_(3.0)  # [M, P, P]
    return torch.where(top.unsqueeze(1) == centre / 2.0, maxc.unsqueeze(1), out)


def color_jitter(x: Tensor, order: Tensor, factors: Tensor, tone: Callable[..., Tensor] | None = None,
                 hue: Callable[..., Tensor] | None = None) -> Tensor:
    """torchvision ColorJitter with a per-patch op order; x [M, 3, P, P], order [M, 4], factors [M, 4].

    order[m] is a permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue; factors[m] holds the
    three factors and the hue shift. Shapes must stay static (no gathering of patches, no device
    syncs), so the sequence runs as three tone slots, the hue, three tone slots: the tone ops before
    the patch's hue act in the first three slots, those after it in the last three, and an unused
    slot has factor 1 and no clamp. That costs one hue per patch instead of one per order position.
    ``tone`` and ``hue`` replace adjust_tone and adjust_hue (by their compiled forms).
    """
    tone, hue = tone or adjust_tone, hue or adjust_hue
    hue_pos = (order == 3).long().argmax(dim=1, keepdim=True)  # [M, 1]
    slot = torch.arange(3, device=order.device)
    before = slot < hue_pos  # [M, 3]: tone slot j runs before the hue
    tone_ops = torch.where(before, order[:, :3], order[:, 1:])  # [M, 3]: the tone ops in their order
    tone_factors = factors.gather(1, tone_ops)
    for j in range(3):
        x = tone(x, tone_ops[:, j], torch.where(before[:, j], tone_factors[:, j], 1.0), before[:, j])
    x = hue(x, factors[:, 3])
    for j in range(3):
        x = tone(x, tone_ops[:, j], torch.where(before[:, j], 1.0, tone_factors[:, j]), ~before[:, j])
    return x


_compiled: tuple[Callable[..., Tensor], Callable[..., Tensor]] | None = None
_compile_failed = False


def _compiled_ops() -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
    """adjust_tone and adjust_hue, each compiled on its own: one fused loop per op. Compiling the whole
    jitter as one graph was slower, as the compiler recomputed earlier ops inside later reductions."""
    global _compiled
    if _compiled is None:
        _compiled = (torch.compile(adjust_tone, dynamic=False), torch.compile(adjust_hue, dynamic=False))
    return _compiled


def recolour(
    x: Tensor,
    ops: tuple[str, ...],
    jitter: Tensor,
    jitter_order: Tensor,
    jitter_factors: Tensor,
    gray: Tensor,
    noise: Tensor,
    noise_values: Tensor | None,
    compiled: bool = False,
) -> Tensor:
    """The colour ops named in ``ops``, in that order, on the patches that drew them; ``compiled`` runs
    the tone and hue ops compiled by torch.compile (one compilation per batch shape, device and dtype).
    Where the compiler is missing or fails, this warns once and runs the eager ops (the same result).

    x float [M, 3, P, P]; jitter, gray, noise bool [M]; jitter_order int64 [M, 4]; jitter_factors [M, 4];
    noise_values [M, 3, P, P] or None -> [M, 3, P, P].
    """
    global _compile_failed
    if compiled and not _compile_failed:
        try:
            return _recolour(x, ops, jitter, jitter_order, jitter_factors, gray, noise, noise_values, _compiled_ops())
        except Exception as err:  # noqa: BLE001 -- any compiler failure: the eager path is exact
            _compile_failed = True
            log.warning("compiling the per-patch colour ops failed, running them eagerly: %s", str(err).splitlines()[0])
    return _recolour(x, ops, jitter, jitter_order, jitter_factors, gray, noise, noise_values, (adjust_tone, adjust_hue))


def _recolour(x: Tensor, ops: tuple[str, ...], jitter: Tensor, jitter_order: Tensor, jitter_factors: Tensor,
              gray: Tensor, noise: Tensor, noise_values: Tensor | None,
              ops_impl: tuple[Callable[..., Tensor], Callable[..., Tensor]]) -> Tensor:
    for name in ops:
        if name == "colJitter":
            jittered = color_jitter(x, jitter_order, jitter_factors.to(x.dtype), *ops_impl)
            x = torch.where(_per_patch(jitter), jittered, x)
        elif name == "grayScale":
            x = torch.where(_per_patch(gray), to_grayscale(x), x)
        elif name == "randomNoise" and noise_values is not None:
            x = torch.where(_per_patch(noise), noise_values.to(x.dtype), x)
    return x
