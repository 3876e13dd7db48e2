"""Batched image-level transforms: the random crop and the flip move whole pixels as defined."""
import torch
import torch.nn.functional as F

from relvit.data.image_augment import random_crop, random_hflip


def test_random_crop_cuts_each_image_at_its_own_offset_of_the_zero_padded_image():
    images = torch.randint(1, 256, (6, 3, 12, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = random_crop(images, 4, torch.Generator().manual_seed(1))
    offsets = torch.randint(0, 9, (2, 6, 1), generator=torch.Generator().manual_seed(1))  # the same draws
    padded = F.pad(images, (4, 4, 4, 4))
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(6):
        top, left = offsets[0, i, 0].item(), offsets[1, i, 0].item()
        assert torch.equal(out[i], padded[i, :, top : top + 12, left : left + 10])
    assert len(set(offsets.flatten().tolist())) > 1 and (out == 0).any()


def test_random_hflip_mirrors_the_images_that_drew_it():
    images = torch.rand(16, 3, 4, 6)
    out = random_hflip(images, torch.Generator().manual_seed(2))
    flip = torch.rand(16, generator=torch.Generator().manual_seed(2)) < 0.5
    assert 0 < flip.sum() < 16
    for image, mirrored, flipped in zip(images, out, flip):
        assert torch.equal(mirrored, image.flip(-1) if flipped else image)
