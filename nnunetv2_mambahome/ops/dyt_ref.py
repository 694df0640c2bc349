"""Readable Dynamic Tanh (DyT): the CPU path of `modules.DynamicTanh` and the reference the Triton kernel
(`ops.triton_dyt`) is tested against."""
from __future__ import annotations

from typing import Optional

import torch


def dyt_ref(x: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
            out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """weight * tanh(alpha * x) + bias over the last dimension; alpha (1,) is already clamped.

    Computed in x's dtype (alpha, weight and bias are cast); with `out_dtype`, x is first cast to it and the
    formula computed in that dtype, as the Mamba layer's `DyT(x.to(token dtype))` always did."""
    if out_dtype is not None:
        x = x.to(out_dtype)
    return torch.addcmul(bias.to(x.dtype), torch.tanh(alpha.to(x.dtype) * x), weight.to(x.dtype))
