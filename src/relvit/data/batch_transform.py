"""The on-device half of the data pipeline: uint8 batches in, normalised model inputs out."""
from __future__ import annotations

import torch
from torch import nn

from relvit.data.image_augment import BatchImageAugment


class BatchTransform(nn.Module):
    """uint8 [B, 3, h, w] -> normalised float [B, 3, S, S], on whatever device the batch is on.

    In order: the dataset's image-level transforms (only for batches that did not already get them
    in loader workers), the task's mega-patch tiling (every split), its per-patch augmentation
    (training only), per-channel normalisation. A per-patch augmentation with ``normalized_input``
    (the original's order) comes after the normalisation instead, which then precedes the tiling.
    """

    mean: torch.Tensor  # [1, 3, 1, 1] (buffers)
    std: torch.Tensor

    def __init__(self, image_augment: BatchImageAugment, mean, std, patch_augment: nn.Module | None = None, megapatch: nn.Module | None = None):
        super().__init__()
        self.image_augment = image_augment
        self.patch_augment = patch_augment
        self.megapatch = megapatch
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, train: bool, augment_images: bool = True) -> torch.Tensor:
        crop_first = (augment_images and train and self.image_augment.train_transform == "crop_flip"
                      and images.shape[-1] == images.shape[-2] == self.image_augment.image_size)
        if crop_first:
            # cropping and flipping move whole pixels: cheaper on uint8 than on float
            images = self.image_augment(images, train)
        x = images.float().div_(255)
        if augment_images and not crop_first:
            x = self.image_augment(x, train)
        if self.mean.device != x.device:
            self.to(x.device)  # once: the statistics follow the batches to their device
        normalise_first = getattr(self.patch_augment, "normalized_input", False)
        if normalise_first:
            x = (x - self.mean) / self.std
        if self.megapatch is not None:
            # evaluation draws its cuts from a fixed seed: the same batches give the same metrics,
            # and evaluating leaves the training's random stream alone
            fixed = None if train else torch.Generator(x.device).manual_seed(0)
            x = self.megapatch(x, fixed)
        if train and self.patch_augment is not None:
            x = self.patch_augment(x)
        # in place: x is this call's own tensor, and a fresh batch-sized tensor costs page faults
        return x if normalise_first else x.sub_(self.mean).div_(self.std)
