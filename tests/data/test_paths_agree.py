"""The in-memory path (batched, on the device) and the streaming path (torchvision, in workers) feed
the model the same inputs: identical at evaluation, the same distribution in training."""
import pytest
import torch
from PIL import Image

from relvit.data.image_augment import BatchImageAugment
from relvit.data.loaders import file_transform


def run_both(image: torch.Tensor, size, train, train_tf, eval_tf, padding=0, hflip=False, draws=1):
    """The same uint8 image [3, h, w] through both paths, ``draws`` times: ([D, 3, S, S], [D, 3, S, S])."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    stream = file_transform(size, train, train_tf, eval_tf, padding, hflip)
    streamed = torch.stack([stream(pil) for _ in range(draws)]).float()
    batched = BatchImageAugment(size, train_tf, eval_tf, padding, hflip)(image[None].float().expand(draws, -1, -1, -1) / 255, train) * 255
    return batched, streamed


@pytest.fixture
def photo():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=48, mode="bilinear")
    return (smooth[0] * 255).round().to(torch.uint8)


@pytest.mark.parametrize("eval_tf,size", [("none", 48), ("resize", 80), ("resize", 24), ("resize_center_crop", 32)])
def test_evaluation_inputs_are_the_same(photo, eval_tf, size):
    batched, streamed = run_both(photo, size, False, "crop_flip", eval_tf)
    assert batched.shape == streamed.shape == (1, 3, size, size)
    # the streaming path resizes in uint8 arithmetic: at most one grey level apart
    diff = (batched - streamed).abs()
    assert diff.max() <= 1.01 and diff.mean() < 0.4


def location_histogram(images: torch.Tensor) -> torch.Tensor:
    """Where the single bright pixel landed, per draw: [D] flat indices (-1 when cropped away)."""
    flat = images[:, 0].flatten(1)
    found = flat.max(dim=1)
    return torch.where(found.values > 127, found.indices, torch.full_like(found.indices, -1))


def test_random_crop_and_flip_draw_the_same_distribution():
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    image[:, 5, 9] = 255
    torch.manual_seed(0)
    batched, streamed = run_both(image, 16, True, "crop_flip", "none", padding=4, hflip=True, draws=4000)
    a = torch.bincount(location_histogram(batched) + 1, minlength=257).float() / 4000
    b = torch.bincount(location_histogram(streamed) + 1, minlength=257).float() / 4000
    assert (a - b).abs().sum() < 0.2  # total variation distance between the two histograms
    cols_a = location_histogram(batched) % 16
    cols_b = location_histogram(streamed) % 16
    assert abs((cols_a > 7).float().mean() - (cols_b > 7).float().mean()) < 0.05  # flips at the same rate


def test_random_resized_crop_draws_the_same_distribution():
    ramp = torch.arange(64, dtype=torch.float32).mul(4).to(torch.uint8)
    image = torch.stack([ramp[None, :].expand(64, 64), ramp[:, None].expand(64, 64), torch.full((64, 64), 128, dtype=torch.uint8)])
    torch.manual_seed(0)
    batched, streamed = run_both(image, 32, True, "resized_crop_flip", "resize", draws=2000)
    for stat in (lambda x: x[:, 1].mean(dim=(1, 2)), lambda x: x[:, 1].std(dim=(1, 2))):
        sa, sb = stat(batched), stat(streamed)
        assert abs(sa.mean() - sb.mean()) < 4 and abs(sa.std() - sb.std()) < 4
    quantiles = torch.tensor([0.1, 0.5, 0.9])
    span_a = batched[:, 1].amax(dim=(1, 2)) - batched[:, 1].amin(dim=(1, 2))  # crop height on the ramp
    span_b = streamed[:, 1].amax(dim=(1, 2)) - streamed[:, 1].amin(dim=(1, 2))
    assert torch.allclose(span_a.quantile(quantiles), span_b.quantile(quantiles), atol=12)
