"""The Mamba (v1) mixer's inner computation after `in_proj`, on either backend.

xz (batch, 2*d_inner, L) -> causal depthwise conv + SiLU -> x_proj -> dt_proj -> selective scan with
D skip and SiLU(z) gate -> out_proj, returning (batch, L, d_model). The `cuda` backend is mamba-ssm's fused
`mamba_inner_fn` (or `causal_conv1d_fn`/`F.conv1d` + `selective_scan_fn` without causal-conv1d); the
`torch` backend composes the same steps with `selective_scan_chunked`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .cuda_kernels import load_cuda_kernels
from .selective_scan_chunked import selective_scan_chunked


def causal_depthwise_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """SiLU(causal depthwise conv) of x (batch, dim, L) with weight (dim, 1, width): output t sees inputs <= t.

    Computed in x's dtype (weight and bias are cast), like causal-conv1d's kernel with mixed types."""
    width = weight.shape[-1]
    bias = None if bias is None else bias.to(x.dtype)
    return F.silu(F.conv1d(x, weight.to(x.dtype), bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]])


def mamba_inner(
    xz: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: Optional[torch.Tensor],
    x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    dt_proj_bias: torch.Tensor,
    out_proj_weight: torch.Tensor,
    out_proj_bias: Optional[torch.Tensor],
    A: torch.Tensor,
    D: torch.Tensor,
    backend: str,
) -> torch.Tensor:
    """Run the mixer body on `backend` ('cuda' or 'torch', already resolved).

    xz and the projection weights share one dtype (float32 or bfloat16); A, D and dt_proj_bias are float32.
    The output has xz's dtype.
    """
    if backend == "cuda":
        return _mamba_inner_cuda(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias,
                                 out_proj_weight, out_proj_bias, A, D)
    seqlen = xz.shape[-1]
    d_state = A.shape[1]
    dt_rank = dt_proj_weight.shape[1]
    x, z = xz.chunk(2, dim=1)
    x = causal_depthwise_conv1d(x, conv_weight, conv_bias)
    x_dbl = F.linear(x.transpose(1, 2), x_proj_weight)  # (b, L, dt_rank + 2N)
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    dt = F.linear(dt, dt_proj_weight).transpose(1, 2)  # (b, d_inner, L), bias added inside the scan
    y = selective_scan_chunked(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), D, z=z,
                               delta_bias=dt_proj_bias, delta_softplus=True)
    assert y.shape[-1] == seqlen
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def _mamba_inner_cuda(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias,
                      out_proj_weight, out_proj_bias, A, D) -> torch.Tensor:
    kernels = load_cuda_kernels()
    assert kernels is not None, "resolve_backend() must be called before mamba_inner(backend='cuda')"
    if kernels.causal_conv1d_fn is not None:
        return kernels.mamba_inner_fn(
            xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, out_proj_weight, out_proj_bias,
            A, None, None, D, delta_bias=dt_proj_bias, delta_softplus=True,
        )
    seqlen = xz.shape[-1]
    d_state, dt_rank = A.shape[1], dt_proj_weight.shape[1]
    x, z = xz.chunk(2, dim=1)
    x = causal_depthwise_conv1d(x, conv_weight, conv_bias)
    x_dbl = F.linear(x.transpose(1, 2), x_proj_weight)
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    dt = F.linear(dt, dt_proj_weight).transpose(1, 2).contiguous()
    y = kernels.selective_scan_fn(x.contiguous(), dt, A, B.transpose(1, 2).contiguous(),
                                  C.transpose(1, 2).contiguous(), D, z=z.contiguous(),
                                  delta_bias=dt_proj_bias, delta_softplus=True)
    assert y.shape[-1] == seqlen
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)
