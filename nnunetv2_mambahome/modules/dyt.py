"""Dynamic Tanh (DyT), the normalisation Mamba-HoME uses in place of LayerNorm.

On CUDA tensors it runs the Triton kernels (`ops.triton_dyt`) when NNUNETV2_MAMBAHOME_NORM resolves to `triton`
at construction (`modules.instance_norm.resolved_norm`: the default `auto` does on GPUs with Triton); elsewhere,
and with `torch`, PyTorch's ops (`ops.dyt_ref`). Parameters and state_dict are the same either way.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..ops.dyt_ref import dyt_ref
from .instance_norm import resolved_norm


class DynamicTanh(nn.Module):
    """y = weight * tanh(clamp(alpha, lo, hi) * x) + bias over the last dimension.

    alpha is one learnable scalar (init 0.5). The clamp to [0.1, 2.0] is in the official code, not in the
    DyT paper; outside the range alpha receives no gradient. `forward(x, out_dtype)` returns `out_dtype`
    (default x's dtype): PyTorch's path computes DyT(x.to(out_dtype)) in that dtype (parameters are cast),
    the Triton path reads x as it is and computes in float32, rounding once to `out_dtype`.
    """

    triton_devices = ("cuda",)  # device types whose tensors take the Triton path (tests add "cpu": the interpreter)

    def __init__(self, normalized_shape: int, alpha_init: float = 0.5, alpha_range: tuple[float, float] = (0.1, 2.0)):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), float(alpha_init)))
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.alpha_range = alpha_range
        self.use_triton = resolved_norm() == "triton"  # a plain attribute: the state_dict does not change

    def forward(self, x: torch.Tensor, out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        alpha = self.alpha.clamp(*self.alpha_range)
        if self.use_triton and x.device.type in self.triton_devices:
            from ..ops.triton_dyt import dyt_triton

            return dyt_triton(x, alpha, self.weight, self.bias, out_dtype)
        return dyt_ref(x, alpha, self.weight, self.bias, out_dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, alpha_range={self.alpha_range}" + (", triton" if self.use_triton else "")
