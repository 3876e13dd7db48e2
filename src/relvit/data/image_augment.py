"""Image-level transforms applied to whole batches on the model's device (the in-memory path).

They draw the same distribution as the torchvision transforms the streaming path runs in its
workers (``relvit.data.loaders.file_transform``), so both paths feed the model alike.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

TRAIN_TRANSFORMS = ("crop_flip", "resized_crop_flip", "none")
EVAL_TRANSFORMS = ("none", "resize", "resize_center_crop")
#: Evaluation at 224 px resizes to 256 before the center crop: the crop keeps 224/256 of the side.
CENTER_CROP_FRACTION = 224 / 256


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by ``padding`` and cut a random window of the original size from every image.

    images [B, C, H, W] -> [B, C, H, W]; each image draws its own offset in [0, 2 * padding].
    """
    if padding == 0:
        return images
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    # drawn where the images are (or the generator is): no host-device copy in the training step
    offsets = torch.randint(0, 2 * padding + 1, (2, b, 1), generator=generator, device=generator.device if generator else images.device)
    offsets = offsets.to(images.device)
    # every window is a row of one strided view of the padded batch, so one gather cuts them all
    hp, wp = h + 2 * padding, w + 2 * padding
    start = torch.arange(b, device=images.device) * (c * hp * wp) + offsets[0, :, 0] * wp + offsets[1, :, 0]
    extent = (c - 1) * hp * wp + (h - 1) * wp + w
    windows = padded.contiguous().view(-1).as_strided((padded.numel() - extent + 1, c, h, w), (1, hp * wp, wp, 1))
    return windows.index_select(0, start)


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 0.5. images [B, C, H, W]."""
    flip = torch.rand(images.shape[0], generator=generator, device=generator.device if generator else images.device) < 0.5
    flip = flip.to(images.device)
    # picking each image from [images; mirrored images] is one gather; torch.where is slow on the CPU
    both = torch.cat((images, images.flip(-1)))
    return both.index_select(0, flip.long() * images.shape[0] + torch.arange(images.shape[0], device=images.device))


def random_resized_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    tries: int = 10,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Crop boxes drawn as torchvision's RandomResizedCrop draws them: FloatTensor [B, 4] (x1, y1, x2, y2).

    Ten tries per image at once; images with no valid try fall back to the central crop of the
    clamped aspect ratio, as torchvision does.
    """
    area = height * width
    dev = generator.device if generator else device
    target_area = area * torch.empty(batch, tries, device=dev).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(batch, tries, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(target_area * aspect).round()
    h = torch.sqrt(target_area / aspect).round()
    valid = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(valid.any(1), valid.float().argmax(1), torch.full((batch,), -1, device=dev))
    pick = first.clamp(min=0)[:, None]
    w = w.gather(1, pick).squeeze(1)
    h = h.gather(1, pick).squeeze(1)
    top = torch.floor(torch.rand(batch, generator=generator, device=dev) * (height - h + 1))
    left = torch.floor(torch.rand(batch, generator=generator, device=dev) * (width - w + 1))
    # torchvision's fallback: the whole image cropped to the nearest allowed aspect ratio, centred.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    fallback = first < 0
    w = torch.where(fallback, torch.full_like(w, fw), w)
    h = torch.where(fallback, torch.full_like(h, fh), h)
    top = torch.where(fallback, torch.full_like(top, (height - fh) // 2), top)
    left = torch.where(fallback, torch.full_like(left, (width - fw) // 2), left)
    return torch.stack((left, top, left + w, top + h), dim=1)


def crop_resize_xyxy(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Cut one box [x1, y1, x2, y2] (pixel edges) out of every image and resize it bilinearly to
    size x size, averaging over the source pixels each output pixel covers when shrinking.
    images float [B, C, H, W], boxes [B, 4] -> [B, C, size, size]."""
    indexed = torch.cat((torch.arange(images.shape[0], device=images.device, dtype=images.dtype)[:, None], boxes.to(images)), dim=1)
    return roi_align(images, indexed, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


class BatchImageAugment(torch.nn.Module):
    """The dataset's image-level train and evaluation transforms for float batches in [0, 1]."""

    def __init__(self, image_size: int, train_transform: str, eval_transform: str, crop_padding: int = 0, hflip: bool = False):
        super().__init__()
        if train_transform not in TRAIN_TRANSFORMS:
            raise ValueError(f"dataset.train_transform must be one of {TRAIN_TRANSFORMS}, got {train_transform!r}")
        if eval_transform not in EVAL_TRANSFORMS:
            raise ValueError(f"dataset.eval_transform must be one of {EVAL_TRANSFORMS}, got {eval_transform!r}")
        self.image_size = image_size
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.crop_padding = crop_padding
        self.hflip = hflip

    def forward(self, images: torch.Tensor, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """images float [B, C, h, w] at the stored size -> [B, C, image_size, image_size]."""
        if train:
            if self.train_transform == "resized_crop_flip":
                boxes = random_resized_boxes(images.shape[0], images.shape[-2], images.shape[-1], generator=generator, device=images.device)
                images = crop_resize_xyxy(images, boxes, self.image_size)
            else:
                images = self._resize(images, self.image_size)
                if self.train_transform == "crop_flip":
                    images = random_crop(images, self.crop_padding, generator)
            return random_hflip(images, generator) if self.hflip else images
        if self.eval_transform == "resize_center_crop":
            # as torchvision: shorter side to image_size / 0.875, then the central crop
            h, w = images.shape[-2:]
            short = round(self.image_size / CENTER_CROP_FRACTION)
            rh, rw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
            images = F.interpolate(images, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
            top, left = int(round((rh - self.image_size) / 2)), int(round((rw - self.image_size) / 2))
            return images[..., top : top + self.image_size, left : left + self.image_size]
        return self._resize(images, self.image_size)

    @staticmethod
    def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
        if images.shape[-1] == size and images.shape[-2] == size:
            return images
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
