"""scikit-learn's bundled 8 x 8 handwritten digits, as RGB images: the embedded dataset."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from relvit.data.sources.base import DataSource, InMemorySplit
from relvit.data.splits import stratified_split


class DigitsSource(DataSource):
    """1,797 grey 8 x 8 digits (values 0-16) upscaled bilinearly to ``image_size`` and repeated over
    three channels. A fixed, stratified ``test_fraction`` is held out as the test split."""

    name = "digits"
    splits = ("train", "test")

    def __init__(self, image_size: int = 16, test_fraction: float = 0.2, seed: int = 0):
        if image_size < 8:
            raise ValueError(f"dataset.image_size for digits must be at least 8, got {image_size}")
        self.image_size = image_size
        self.test_fraction = test_fraction
        self.seed = seed
        self._data: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def classes(self) -> list[str]:
        return [str(d) for d in range(10)]

    def _all(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._data is None:
            from sklearn.datasets import load_digits

            digits = load_digits()
            grey = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # [N, 1, 8, 8]
            if self.image_size != 8:
                grey = F.interpolate(grey, size=self.image_size, mode="bilinear", align_corners=False)
            images = (grey.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
            self._data = images, torch.as_tensor(digits.target, dtype=torch.int64)
        return self._data

    def load(self, split: str) -> InMemorySplit:
        self.check_split(split)
        images, labels = self._all()
        train_idx, test_idx = stratified_split(labels, self.test_fraction, self.seed)
        idx = train_idx if split == "train" else test_idx
        return InMemorySplit(images[idx], labels[idx])
