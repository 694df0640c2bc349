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


# token chunks of the split-K weight gradients (`contract_tokens`): at least 1,024 tokens, at most 128 chunks
_MIN_CHUNK, _MAX_CHUNKS = 1024, 128


def contract_tokens(a: Tensor, b: Tensor) -> Tensor:
    """sum over the batch and the token axis of a[i] @ b[i]^T, for a (batch, M, L) and b (batch, N, L) with any
    strides: a projection's weight gradient, summed in float32 (float64 for float64) and rounded once to a's dtype.

    Why not `torch.bmm(a, b.mT).sum(0)`: with a small (M, N) output and a contraction over 10^5 tokens cuBLAS runs
    a handful of thread blocks (H200: 0.82 ms for M=128, N=4, L=122,880, ~30x what its bytes need). Here every
    sample's L is cut into up to 128 chunks that are the batch of one bmm (views, no copies), then summed."""
    length, acc = a.shape[-1], torch.promote_types(a.dtype, torch.float32)
    n_chunks = min(length // _MIN_CHUNK, _MAX_CHUNKS)
    if n_chunks < 2:
        return torch.bmm(a, b.transpose(1, 2)).sum(0, dtype=acc).to(a.dtype)
    chunk = length // n_chunks
    main = n_chunks * chunk
    out = torch.zeros(a.shape[1], b.shape[1], dtype=acc, device=a.device)
    for ai, bi in zip(a, b):  # (M, L), (N, L): chunk c of L is batch entry c
        parts = torch.bmm(ai[:, :main].unflatten(-1, (n_chunks, chunk)).transpose(0, 1),
                          bi[:, :main].unflatten(-1, (n_chunks, chunk)).permute(1, 2, 0))
        out += parts.sum(0, dtype=acc)
    if main < length:
        out += torch.bmm(a[..., main:], b[..., main:].transpose(1, 2)).sum(0, dtype=acc)
    return out.to(a.dtype)


def weight_times(weight: Tensor, t: Tensor) -> Tensor:
    """weight @ t[i] for every sample of t (batch, K, L), as one bmm: (batch, M, L), always contiguous.

    `torch.matmul(weight, t)` folds the batch into one GEMM when t^T is foldable (t a transposed view of
    contiguous tokens) and then returns a transposed view, whose L is strided: the scan kernels copy that."""
    return torch.bmm(weight.expand(t.shape[0], -1, -1), t)


class _ChannelsFirstLinear(torch.autograd.Function):
    """weight @ x^T per sample: tokens (batch, L, d_in) -> (batch, d_out, L) contiguous, with the weight
    gradient as `contract_tokens` (split over L) and the input gradient as one bmm, contiguous (batch, L, d_in)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, weight):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        return weight_times(weight, x.transpose(1, 2))

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dy):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        dx = torch.bmm(dy.transpose(1, 2), weight.expand(dy.shape[0], -1, -1)) if ctx.needs_input_grad[0] else None
        dw = contract_tokens(dy, x.transpose(1, 2)) if ctx.needs_input_grad[1] else None
        return dx, dw


def channels_first_linear(x: Tensor, weight: Tensor) -> Tensor:
    """F.linear(x, weight).transpose(1, 2), computed in that layout: (batch, L, d_in) -> (batch, d_out, L) with L
    contiguous (the layout the scan kernels read, as mamba-ssm's in_proj produces it), differentiable."""
    return _ChannelsFirstLinear.apply(x, weight)


def tokens_linear(y: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """F.linear(y.transpose(1, 2), weight, bias) for y (batch, d, L): one bmm reading y as a transposed operand,
    where F.linear would first copy the transposed y to fold it into one matrix."""
    w = weight.t().expand(y.shape[0], -1, -1)
    y_t = y.transpose(1, 2)
    return torch.bmm(y_t, w) if bias is None else torch.baddbmm(bias, y_t, w)


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
        return tokens_linear(out_z, out_proj_weight, out_proj_bias)

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
        dy = weight_times(out_proj_weight.t(), dout.transpose(1, 2))  # (b, d_inner, L), L contiguous
        du, ddelta, dA, dB, dC, dD, d_dt_bias, dz, out_z = scan.backward(
            u, delta, A, x_dbl[:, rank:rank + n], x_dbl[:, rank + n:], D, z, dt_proj_bias, True, dy, saved)
        d_out_w = contract_tokens(dout.transpose(1, 2), out_z)
        d_out_b = dout.sum((0, 1)) if ctx.has_out_bias else None
        d_dt_w = contract_tokens(ddelta, x_dbl[:, :rank])
        dx_dbl = torch.cat([torch.matmul(dt_proj_weight.t(), ddelta), dB.to(x_dbl.dtype), dC.to(x_dbl.dtype)], 1)
        d_x_w = contract_tokens(dx_dbl, u)
        du = torch.baddbmm(du, x_proj_weight.t().expand(du.shape[0], -1, -1), dx_dbl)
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
