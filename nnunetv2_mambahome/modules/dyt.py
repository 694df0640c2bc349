"""Dynamic Tanh (DyT), the normalisation Mamba-HoME uses in place of LayerNorm."""
from __future__ import annotations

import torch
from torch import nn


class DynamicTanh(nn.Module):
    """y = weight * tanh(clamp(alpha, lo, hi) * x) + bias over the last dimension.

    alpha is one learnable scalar (init 0.5). The clamp to [0.1, 2.0] is in the official code, not in the
    DyT paper; outside the range alpha receives no gradient. Computes in x's dtype (parameters are cast).
    """

    def __init__(self, normalized_shape: int, alpha_init: float = 0.5, alpha_range: tuple[float, float] = (0.1, 2.0)):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), float(alpha_init)))
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.alpha_range = alpha_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.clamp(*self.alpha_range).to(x.dtype)
        return torch.addcmul(self.bias.to(x.dtype), torch.tanh(alpha * x), self.weight.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, alpha_range={self.alpha_range}"
