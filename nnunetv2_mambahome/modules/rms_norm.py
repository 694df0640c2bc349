"""The RMSNorm of the HoME routers: L2-normalise, scale by sqrt(d) and a learnable gamma."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """F.normalize(x, eps=1e-8) * sqrt(d) * gamma over the last dimension (no temperature, as the reference)."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.scale = dim ** 0.5
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, eps=self.eps) * self.scale * self.gamma
