"""Linear evaluation of frozen features: a linear classifier trained on cached features in large
batches, its learning rate and weight decay chosen on the validation split."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import torch
import torch.nn.functional as F

from relvit.probes.knn import top_k_accuracy


@dataclass
class LinearResult:
    """The chosen setting and its accuracies (``test_acc`` is None without a test split)."""

    lr: float
    weight_decay: float
    val_acc: float
    test_acc: float | None
    val_acc_top5: float | None = None
    test_acc_top5: float | None = None


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Scale every feature to zero mean and unit variance with the training split's statistics."""
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, lr: float, weight_decay: float,
               steps: int = 300, batch_size: int = 4096, seed: int = 0) -> torch.nn.Linear:
    """A linear classifier on x [N, D] with labels y [N], trained by AdamW for ``steps`` steps on
    random batches of ``batch_size`` rows (the whole set when it is smaller), cosine-decayed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    full = x.shape[0] <= batch_size
    with torch.enable_grad():
        for _ in range(steps):
            idx = None if full else torch.randint(x.shape[0], (batch_size,), generator=generator).to(x.device)
            xb, yb = (x, y) if idx is None else (x[idx], y[idx])
            loss = F.cross_entropy(head(xb), yb)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    return head


@torch.no_grad()
def linear_eval(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                test: tuple[torch.Tensor, torch.Tensor] | None, num_classes: int, lrs: list[float],
                weight_decays: list[float], steps: int = 300, batch_size: int = 4096, seed: int = 0) -> LinearResult:
    """Fit one classifier per (lr, weight decay) on ``train`` (features [N, D], labels [N]), keep the
    one with the best validation accuracy, and report it on ``val`` and ``test``."""
    if not lrs or not weight_decays:
        raise ValueError("linear evaluation needs at least one learning rate and one weight decay")
    xs = standardise(train[0].float(), val[0].float(), *([test[0].float()] if test is not None else []))
    best: tuple[float, float, float, torch.nn.Linear] | None = None
    for lr, wd in product(lrs, weight_decays):
        head = fit_linear(xs[0], train[1], num_classes, lr, wd, steps, batch_size, seed)
        acc = top_k_accuracy(head(xs[1]), val[1])
        if best is None or acc > best[0]:
            best = (acc, lr, wd, head)
    assert best is not None
    acc, lr, wd, head = best
    top5 = num_classes > 10
    result = LinearResult(lr, wd, acc, None, top_k_accuracy(head(xs[1]), val[1], 5) if top5 else None)
    if test is not None:
        result.test_acc = top_k_accuracy(head(xs[2]), test[1])
        result.test_acc_top5 = top_k_accuracy(head(xs[2]), test[1], 5) if top5 else None
    return result
