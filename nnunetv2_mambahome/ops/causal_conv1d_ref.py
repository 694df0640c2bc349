"""Readable causal depthwise conv1d + SiLU (the Mamba mixer's short convolution): the `torch` backend's conv and
the reference the Triton and causal-conv1d kernels are tested against."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def causal_conv1d_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """SiLU(causal depthwise conv) of x (batch, dim, L) with weight (dim, W): output t sees inputs <= t.

    Computed in x's dtype (weight and bias are cast), like causal-conv1d's kernel with mixed types."""
    width = weight.shape[-1]
    bias = None if bias is None else bias.to(x.dtype)
    w = weight.reshape(weight.shape[0], 1, width).to(x.dtype)
    return F.silu(F.conv1d(x, w, bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]])
