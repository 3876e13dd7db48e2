"""The online linear probe of pre-training runs: a linear classifier on detached, un-augmented features.

A probe trained by one small step per batch lags behind an encoder whose features keep moving, and
ends far below a linear classifier fitted on the final features. This one keeps the clean features
and labels of the current epoch's training batches (a bank of [N, D]; N the epoch's training images
on this process), and before every validation fits itself to them: the standardisation set to the
bank's mean and variance, then ``steps`` Adam steps on random batches of the bank, warm-started from
the previous fit, the rate decaying from ``lr`` to 0 along a half cosine. Under DDP the banks of all
processes are gathered first, and every process runs the same fit with the same draws, so the
weights stay identical without a gradient all-reduce. The fit draws from its own generator and
never enters the backbone's backward pass or optimiser: a run trains the backbone bit for bit as
without the probe.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from relvit.runs.distributed import gather_rows, process_group


class OnlineProbe(nn.Module):
    """Linear classifier on the mean patch token: patches [B, N, D] -> logits [B, C]."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        # statistics only (no affine part), set from the bank at every fit; never updated by forward
        self.norm = nn.BatchNorm1d(embed_dim, affine=False)
        self.fc = nn.Linear(embed_dim, num_classes)
        self.fc.requires_grad_(False)  # trained by `fit` alone, never by the run's optimiser
        self._bank: list[tuple[torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def pool(patches: torch.Tensor) -> torch.Tensor:
        """[B, N, D] -> [B, D]: the mean patch token."""
        return patches.mean(dim=1)

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = self.norm.running_mean, self.norm.running_var
        assert mean is not None and var is not None  # BatchNorm1d with track_running_stats (the default)
        return mean, var

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, D] with the statistics of the last fit."""
        mean, var = self._statistics()
        return (features - mean) * torch.rsqrt(var + self.norm.eps)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc(self.standardise(self.pool(patches)))

    # ------------------------------------------------------------------------------- the bank
    @torch.no_grad()
    def collect(self, patches: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep the pooled clean features [B, D] and labels [B] of one training batch."""
        self._bank.append((self.pool(patches.detach()).float(), labels.detach()))

    def clear(self) -> None:
        self._bank = []

    @property
    def banked(self) -> int:
        return sum(len(labels) for _, labels in self._bank)

    def bank_state(self) -> dict[str, torch.Tensor]:
        """The bank of every process, in rank order (each holds as many rows: all train as many
        batches), for a checkpoint taken mid-epoch: without it a resumed run fits to part of an epoch."""
        features, labels = gather_rows(*self._bank_tensors())
        return {"features": features.cpu(), "labels": labels.cpu()}

    def load_bank_state(self, state: dict[str, torch.Tensor]) -> None:
        """This process's share of a ``bank_state``."""
        rank, world = process_group()
        share = len(state["labels"]) // world
        rows = slice(rank * share, (rank + 1) * share)
        self._bank = [(state["features"][rows], state["labels"][rows])] if share else []

    # -------------------------------------------------------------------------------- the fit
    def fit(self, lr: float, steps: int, batch_size: int = 256, seed: int = 0) -> float | None:
        """Fit to the bank (gathered over processes) and empty it; returns the last batch's loss,
        or None when the bank is empty on every process."""
        features, labels = gather_rows(*self._bank_tensors())
        self.clear()
        if len(labels) == 0:
            return None
        with torch.no_grad():
            mean, var = self._statistics()
            mean.copy_(features.mean(0))
            var.copy_(features.var(0, unbiased=False))
        x = self.standardise(features)
        weight = self.fc.weight.detach().clone().requires_grad_(True)
        bias = self.fc.bias.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([weight, bias], lr=lr)
        generator = torch.Generator(device=x.device).manual_seed(seed)
        loss = torch.zeros(())
        with torch.enable_grad():
            for step in range(steps):
                for group in optimizer.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
                rows = torch.randint(0, len(labels), (min(batch_size, len(labels)),), device=x.device, generator=generator)
                loss = F.cross_entropy(F.linear(x[rows], weight, bias), labels[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(bias)
        return float(loss.detach())

    def _bank_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.fc.weight.device  # a bank restored from a checkpoint may sit on the CPU
        if self._bank:
            return torch.cat([f.to(device) for f, _ in self._bank]), torch.cat([y.to(device) for _, y in self._bank])
        return torch.zeros(0, self.fc.in_features, device=device), torch.zeros(0, dtype=torch.long, device=device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of a probe without standardisation hold no statistics: it starts with fresh ones
        for name, value in self.norm.state_dict().items():
            state_dict.setdefault(f"{prefix}norm.{name}", value)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

