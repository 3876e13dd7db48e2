"""Per-step learning-rate schedules: linear warm-up, then a cosine decay to a floor."""
from __future__ import annotations

import math

import lightning as L
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

DECAYS = ("quarter_cosine", "half_cosine")


class WarmupCosine:
    """Learning-rate multiplier of step ``s`` out of ``total``.

    Warm-up: linear from 0 to the base rate over the first ``warmup_fraction`` of the steps. Then
    - ``quarter_cosine`` (the original RelViT schedule):
      ``lr = base - (base - min_lr) * (1 - cos(pi/2 * s / total))``, the phase counted from step 0;
    - ``half_cosine`` (the usual one): ``lr = min_lr + (base - min_lr) * (1 + cos(pi * p)) / 2``
      with ``p`` the progress through the steps after warm-up.
    """

    def __init__(self, total_steps: int, base_lr: float, decay: str = "quarter_cosine", warmup_fraction: float = 0.1, min_lr: float = 1.25e-6):
        if decay not in DECAYS:
            raise ValueError(f"scheduler.decay must be one of {DECAYS}, got {decay!r}")
        self.total = max(int(total_steps), 1)
        self.warmup = int(warmup_fraction * self.total)
        self.base_lr = base_lr
        self.min_lr = min_lr
        self.decay = decay

    def lr(self, step: int) -> float:
        step = min(step, self.total)
        if step < self.warmup:
            return self.base_lr * step / self.warmup
        if self.decay == "quarter_cosine":
            return self.base_lr - (self.base_lr - self.min_lr) * (1 - math.cos(math.pi / 2 * step / self.total))
        progress = (step - self.warmup) / max(self.total - self.warmup, 1)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    def __call__(self, step: int) -> float:
        return self.lr(step) / self.base_lr

    def stretch(self, total_steps: int) -> None:
        """Re-plan the decay over ``total_steps`` (the warm-up, already done, keeps its length)."""
        self.total = max(int(total_steps), 1)


def warmup_cosine(optimizer: Optimizer, total_steps: int, decay: str = "quarter_cosine", warmup_fraction: float = 0.1, min_lr: float = 1.25e-6) -> LambdaLR:
    """A per-step LambdaLR over ``optimizer`` following ``WarmupCosine`` from its first group's rate."""
    base_lr = optimizer.param_groups[0]["lr"]
    return LambdaLR(optimizer, WarmupCosine(total_steps, base_lr, decay, warmup_fraction, min_lr))


class StretchSchedule(L.Callback):
    """For ``extend_to_epochs``: after a resume has restored the schedule of the shorter run, stretch
    its decay over the longer run's steps, so the new epochs continue down the cosine from the rate of
    the step reached instead of sitting at the floor."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = int(trainer.estimated_stepping_batches)
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            for lam in getattr(scheduler, "lr_lambdas", []):
                if isinstance(lam, WarmupCosine):
                    lam.stretch(total)
            if isinstance(scheduler, LambdaLR):
                rates = [base * lam(scheduler.last_epoch) for base, lam in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
                for group, rate in zip(scheduler.optimizer.param_groups, rates):
                    group["lr"] = rate
                scheduler._last_lr = rates
