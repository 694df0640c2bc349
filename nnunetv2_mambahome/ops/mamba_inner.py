"""The Mamba (v1) mixer's inner computation after `in_proj`, in two bodies that take their kernels as arguments.

xz (batch, 2*d_inner, L) -> causal depthwise conv + SiLU -> x_proj -> dt_proj -> selective scan with D skip
and SiLU(z) gate -> out_proj, returning (batch, L, d_model).

- `mamba_inner_fused` (the `triton` and `cuda` backends): one autograd Function over a conv kernel and a scan
  kernel, as mamba-ssm's `MambaInnerFn`: it saves only xz, x_dbl (dt_rank + 2N values per token) and the scan's
  own small state, and recomputes the conv output, delta and the gated scan output in the backward.
- `mamba_inner_unfused` (the `torch` backend): the same steps as differentiable torch ops around any scan
  function with `selective_scan_ref`'s signature (autograd saves every intermediate).

Both keep L contiguous everywhere the scan reads: x_dbl = W_x @ u is (batch, dt_rank + 2N, L), so delta, B
and C are views or products in that layout and no transposed copy of a (batch, d_inner, L) tensor is made.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .causal_conv1d_ref import causal_conv1d_ref
from .conv_ops import ConvKernel
from .scan_ops import ScanKernel


class _FusedMambaInner(torch.autograd.Function):
    """custom_fwd/custom_bwd: the backward runs under the forward's autocast state (off, inside the token
    region), also when a caller runs backward inside autocast."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, out_proj_weight,
                out_proj_bias, A, D, conv: ConvKernel, scan: ScanKernel, save: bool):  # type: ignore[override]
        rank, n = dt_proj_weight.shape[1], A.shape[1]
        x, z = xz.chunk(2, dim=1)
        u = conv.fwd(x, conv_weight.view(conv_weight.shape[0], -1), conv_bias)
        x_dbl = torch.matmul(x_proj_weight, u)  # (b, rank + 2N, L)
        delta = torch.matmul(dt_proj_weight, x_dbl[:, :rank])  # (b, d_inner, L)
        out_z, saved = scan.forward(u, delta, A, x_dbl[:, rank:rank + n], x_dbl[:, rank + n:], D, z, dt_proj_bias,
                                    True, save)
        if save:
            ctx.save_for_backward(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias,
                                  out_proj_weight, A, D, x_dbl, *saved)
            ctx.kernels = conv, scan
            ctx.has_out_bias = out_proj_bias is not None
        return F.linear(out_z.transpose(1, 2), out_proj_weight, out_proj_bias)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dout):  # type: ignore[override]
        conv, scan = ctx.kernels
        (xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, out_proj_weight, A, D, x_dbl,
         *saved) = ctx.saved_tensors
        rank, n = dt_proj_weight.shape[1], A.shape[1]
        x, z = xz.chunk(2, dim=1)
        w = conv_weight.view(conv_weight.shape[0], -1)
        u = conv.fwd(x, w, conv_bias)  # recomputed, as mamba-ssm's MambaInnerFn does
        delta = torch.matmul(dt_proj_weight, x_dbl[:, :rank])
        dout = dout.contiguous()
        dy = torch.matmul(out_proj_weight.t(), dout.transpose(1, 2))  # (b, d_inner, L), L contiguous
        du, ddelta, dA, dB, dC, dD, d_dt_bias, dz, out_z = scan.backward(
            u, delta, A, x_dbl[:, rank:rank + n], x_dbl[:, rank + n:], D, z, dt_proj_bias, True, dy, saved)
        d_out_w = torch.bmm(dout.transpose(1, 2), out_z.transpose(1, 2)).sum(0)
        d_out_b = dout.sum((0, 1)) if ctx.has_out_bias else None
        d_dt_w = torch.bmm(ddelta, x_dbl[:, :rank].transpose(1, 2)).sum(0)
        dx_dbl = torch.cat([torch.matmul(dt_proj_weight.t(), ddelta), dB.to(x_dbl.dtype), dC.to(x_dbl.dtype)], 1)
        d_x_w = torch.bmm(dx_dbl, u.transpose(1, 2)).sum(0)
        du = du + torch.matmul(x_proj_weight.t(), dx_dbl)
        dx, d_conv_w, d_conv_b = conv.bwd(x, w, conv_bias, du)
        return (torch.cat([dx, dz], 1), d_conv_w.view(conv_weight.shape), d_conv_b, d_x_w, d_dt_w, d_dt_bias,
                d_out_w, d_out_b, dA, dD, None, None, None)


def mamba_inner_fused(xz: Tensor, conv_weight: Tensor, conv_bias: Optional[Tensor], x_proj_weight: Tensor,
                      dt_proj_weight: Tensor, dt_proj_bias: Tensor, out_proj_weight: Tensor,
                      out_proj_bias: Optional[Tensor], A: Tensor, D: Tensor, conv: ConvKernel,
                      scan: ScanKernel) -> Tensor:
    """The mixer body with `conv` and `scan` kernels (see the module docstring).

    xz and the projection weights share one dtype (float32 or bfloat16); A, D, dt_proj_bias and the conv's
    parameters are float32. The output has xz's dtype."""
    tensors = (xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, out_proj_weight,
               out_proj_bias, A, D)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return _FusedMambaInner.apply(*tensors, conv, scan, save)


def mamba_inner_unfused(xz: Tensor, conv_weight: Tensor, conv_bias: Optional[Tensor], x_proj_weight: Tensor,
                        dt_proj_weight: Tensor, dt_proj_bias: Tensor, out_proj_weight: Tensor,
                        out_proj_bias: Optional[Tensor], A: Tensor, D: Tensor, scan: Callable) -> Tensor:
    """The same computation as `mamba_inner_fused` from differentiable torch ops and `scan`."""
    rank, n = dt_proj_weight.shape[1], A.shape[1]
    x, z = xz.chunk(2, dim=1)
    u = causal_conv1d_ref(x, conv_weight.view(conv_weight.shape[0], -1), conv_bias)
    x_dbl = torch.matmul(x_proj_weight, u)
    delta = torch.matmul(dt_proj_weight, x_dbl[:, :rank])
    y = scan(u, delta, A, x_dbl[:, rank:rank + n], x_dbl[:, rank + n:], D, z=z, delta_bias=dt_proj_bias,
             delta_softplus=True)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)
