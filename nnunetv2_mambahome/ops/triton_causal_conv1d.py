"""Causal depthwise conv1d + SiLU in Triton, forward and backward (the `triton` backend's conv).

out[b, d, t] = SiLU(bias[d] + sum_k w[d, k] x[b, d, t - (W-1) + k]): the Mamba mixer's short convolution,
as causal-conv1d computes it. Without this kernel the torch path (cuDNN depthwise conv + a separate SiLU, and
a transposed copy) would cost more than the Triton scan it feeds. Inputs may be strided (the x half of xz)
and float32/float16/bfloat16; accumulation is float32, the output has x's dtype. The backward recomputes the
pre-activations it needs (W x W multiply-adds per step, nothing saved) and writes dw/dbias partial sums per
tile of L, reduced afterwards with `torch.sum` (deterministic, no atomics).
The pure-PyTorch reference is `causal_conv1d_ref.causal_conv1d_ref`. Registered as custom ops
(`mambahome::causal_conv1d_triton_fwd` / `_bwd`, fake implementations, autograd; `conv_ops`):
`causal_conv1d_triton` is the kernel the fused mixer takes.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .conv_ops import define_conv_kernel


@triton.jit
def _pre_activation(x_ptr, w_ptr, bias, offs_d, offs_t, mask_d, L, s_b, s_d, s_l, W: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr):
    """bias + sum_k w[:, k] x[:, t - (W-1) + k] for the steps offs_t (float32)."""
    acc = tl.zeros((BLOCK_D, BLOCK_T), tl.float32) + bias[:, None]
    for k in tl.static_range(W):
        t_in = offs_t - (W - 1) + k
        m = mask_d[:, None] & ((t_in >= 0) & (t_in < L))[None, :]
        xk = tl.load(x_ptr + s_b + offs_d[:, None] * s_d + t_in[None, :] * s_l, mask=m, other=0.0).to(tl.float32)
        wk = tl.load(w_ptr + offs_d * W + k, mask=mask_d, other=0.0).to(tl.float32)
        acc += wk[:, None] * xk
    return acc


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr, dim, L, s_xb, s_xd, s_xl,
                     W: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr):
    pid_t = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < dim
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    pre = _pre_activation(x_ptr, w_ptr, bias, offs_d, offs_t, mask_d, L, pid_b * s_xb, s_xd, s_xl, W, BLOCK_D,
                          BLOCK_T)
    out = pre / (1.0 + tl.exp(-pre))
    mask = mask_d[:, None] & (offs_t < L)[None, :]
    tl.store(out_ptr + pid_b * dim * L + offs_d[:, None] * L + offs_t[None, :], out.to(out_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _conv_bwd_kernel(x_ptr, w_ptr, b_ptr, dout_ptr, dx_ptr, dw_ptr, db_ptr, dim, L, n_tblocks,
                     s_xb, s_xd, s_xl, s_gb, s_gd, s_gl, s_dxb, s_dxd, s_dxl,
                     W: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr):
    """dx[t] = sum_s w[W-1-s] dpre[t+s]; dw/db partial sums of this tile (batch, tiles, dim, W) / (.., dim)."""
    pid_t = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < dim
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    dx = tl.zeros((BLOCK_D, BLOCK_T), tl.float32)
    part = (pid_b * n_tblocks + pid_t) * dim + offs_d
    for s in tl.static_range(W):
        t_out = offs_t + s
        m = mask_d[:, None] & (t_out < L)[None, :]
        pre = _pre_activation(x_ptr, w_ptr, bias, offs_d, t_out, mask_d, L, pid_b * s_xb, s_xd, s_xl, W, BLOCK_D,
                              BLOCK_T)
        sig = 1.0 / (1.0 + tl.exp(-pre))
        g = tl.load(dout_ptr + pid_b * s_gb + offs_d[:, None] * s_gd + t_out[None, :] * s_gl, mask=m,
                    other=0.0).to(tl.float32)
        dpre = tl.where(m, g * sig * (1.0 + pre * (1.0 - sig)), 0.0)
        w_s = tl.load(w_ptr + offs_d * W + (W - 1 - s), mask=mask_d, other=0.0).to(tl.float32)
        dx += w_s[:, None] * dpre
        if s == 0:  # this tile's own steps: the weight and bias gradients
            tl.store(db_ptr + part, tl.sum(dpre, 1), mask=mask_d)
            for k in tl.static_range(W):
                t_in = offs_t - (W - 1) + k
                mk = mask_d[:, None] & ((t_in >= 0) & (t_in < L))[None, :]
                xk = tl.load(x_ptr + pid_b * s_xb + offs_d[:, None] * s_xd + t_in[None, :] * s_xl, mask=mk,
                             other=0.0).to(tl.float32)
                tl.store(dw_ptr + part * W + k, tl.sum(dpre * xk, 1), mask=mask_d)
    mask = mask_d[:, None] & (offs_t < L)[None, :]
    tl.store(dx_ptr + pid_b * s_dxb + offs_d[:, None] * s_dxd + offs_t[None, :] * s_dxl,
             dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _tiles(device: torch.device, dim: int) -> tuple[int, int]:
    block_t = 128 if device.type == "cuda" else 256  # the interpreter prefers few, large tiles
    return min(16, triton.next_power_of_2(dim)), block_t


def _conv_fwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    b, d, L = x.shape
    out = torch.empty((b, d, L), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    block_d, block_t = _tiles(x.device, d)
    grid = (triton.cdiv(L, block_t), triton.cdiv(d, block_d), b)
    _conv_fwd_kernel[grid](x, weight, bias if bias is not None else weight, out, d, L, *x.stride(),
                           W=weight.shape[1], HAS_BIAS=bias is not None, BLOCK_D=block_d, BLOCK_T=block_t)
    return out


def _conv_bwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
              dout: torch.Tensor) -> tuple:
    b, d, L = x.shape
    width = weight.shape[1]
    dx = torch.empty((b, d, L), dtype=x.dtype, device=x.device)
    block_d, block_t = _tiles(x.device, d)
    n_tblocks = triton.cdiv(L, block_t)
    dw = torch.zeros((b, n_tblocks, d, width), dtype=torch.float32, device=x.device)
    db = torch.zeros((b, n_tblocks, d), dtype=torch.float32, device=x.device)
    if x.numel():
        grid = (n_tblocks, triton.cdiv(d, block_d), b)
        _conv_bwd_kernel[grid](x, weight, bias if bias is not None else weight, dout, dx, dw, db, d, L, n_tblocks,
                               *x.stride(), *dout.stride(), *dx.stride(), W=width, HAS_BIAS=bias is not None,
                               BLOCK_D=block_d, BLOCK_T=block_t)
    return dx, dw.sum((0, 1)).to(weight.dtype), db.sum((0, 1)).to(bias.dtype) if bias is not None else None


causal_conv1d_triton = define_conv_kernel("triton", "triton", _conv_fwd, _conv_bwd)
