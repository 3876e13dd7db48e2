"""The online linear probe of pre-training runs: a linear classifier on detached features."""
from __future__ import annotations

import torch
from torch import nn


class OnlineProbe(nn.Module):
    """Linear classifier on the mean patch token [B, N, D] -> logits [B, C].

    The features are standardised by a BatchNorm without affine parameters: the encoder's feature
    scale drifts during pre-training, and a plain linear layer at a small learning rate would spend
    the whole run catching up with it.
    """

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(embed_dim, affine=False)
        self.fc = nn.Linear(embed_dim, num_classes)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(patches.mean(dim=1)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of a probe without standardisation hold no statistics: it starts with fresh ones
        for name, value in self.norm.state_dict().items():
            state_dict.setdefault(f"{prefix}norm.{name}", value)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
