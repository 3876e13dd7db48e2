"""Task heads on top of the backbone's tokens."""
from __future__ import annotations

import math

import torch
from torch import nn


class PairScoreHead(nn.Module):
    """Scores every ordered pair of patch tokens with one bias-free query/key map per output class.

    The score of class ``k`` at ``(a, b)`` is ``q_k(z_a) . k_k(z_b) / sqrt(d)`` with ``d = D // K``
    (the relation head has K = 9; the distance and angle heads K = 1).
    """

    def __init__(self, embed_dim: int, num_outputs: int):
        super().__init__()
        self.num_outputs = num_outputs
        self.head_dim = embed_dim // num_outputs
        if self.head_dim < 1:
            raise ValueError(f"embed_dim {embed_dim} is too small for {num_outputs} pair-score heads")
        self.query = nn.Linear(embed_dim, num_outputs * self.head_dim, bias=False)
        self.key = nn.Linear(embed_dim, num_outputs * self.head_dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, D] -> scores [B, K, N, N]."""
        b, n, _ = tokens.shape
        q = self.query(tokens).view(b, n, self.num_outputs, self.head_dim).transpose(1, 2)  # [B, K, N, d]
        k = self.key(tokens).view(b, n, self.num_outputs, self.head_dim).transpose(1, 2)
        return q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)


class ClassifierHead(nn.Module):
    """Linear classifier on the CLS token, on the mean of the patch tokens, or on all patch tokens
    flattened (``pool``: ``cls``, ``mean`` or ``flatten``)."""

    POOLS = ("cls", "mean", "flatten")

    def __init__(self, embed_dim: int, num_patches: int, num_classes: int, pool: str):
        super().__init__()
        if pool not in self.POOLS:
            raise ValueError(f"classifier pool must be one of {self.POOLS}, got {pool!r}")
        self.pool = pool
        in_features = embed_dim * num_patches if pool == "flatten" else embed_dim
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, cls: torch.Tensor | None, patches: torch.Tensor) -> torch.Tensor:
        """cls [B, D] or None, patches [B, N, D] -> logits [B, C]."""
        if self.pool == "cls":
            features = cls
        elif self.pool == "mean":
            features = patches.mean(dim=1)
        else:
            features = patches.flatten(1)
        return self.fc(features)
