"""Cosine annealing with nnU-Net's scheduler interface (`step(epoch)` sets the learning rate of that epoch)."""
from __future__ import annotations

import math
from typing import Optional

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class CosineAnnealingScheduler(LRScheduler):
    """lr(epoch) = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / max_epochs)) / 2.

    Equals torch's `CosineAnnealingLR(T_max=max_epochs)` stepped once per epoch (the official recipe), but
    is stepped like nnU-Net's PolyLRScheduler: `on_train_epoch_start` calls `step(current_epoch)`, which
    also makes resuming from a checkpoint exact. `step()` without an argument advances an internal counter.
    """

    def __init__(self, optimizer: Optimizer, initial_lr: float, max_epochs: int, eta_min: float = 0.0):
        self.initial_lr, self.max_epochs, self.eta_min = initial_lr, max_epochs, eta_min
        self.ctr = 0
        super().__init__(optimizer, -1)

    def lr_at(self, epoch: int) -> float:
        return self.eta_min + (self.initial_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.max_epochs)) / 2

    def step(self, epoch: Optional[int] = None) -> None:
        if epoch is None or epoch == -1:
            epoch, self.ctr = self.ctr, self.ctr + 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
