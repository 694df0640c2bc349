"""Dynamic Tanh (DyT) in Triton, forward and backward: the two DyTs of every depth of a Mamba-HoME block in one
kernel each way, instead of PyTorch's ~3 forward and ~8 backward element-wise and reduction kernels.

y = weight[c] * tanh(alpha * x) + bias[c] over the last dimension, as `ops.dyt_ref` (its readable reference,
compared in the tests). x (..., C) float32/float16/bfloat16; alpha a 1-element tensor, already clamped by the
caller (the clamp stays in PyTorch's autograd, so alpha gets no gradient outside its range); weight and bias
(C,), loaded and cast inside the kernel; the output in `out_dtype` (default x's dtype), so the Mamba layer's
cast of the float32 residual stream to the token dtype is part of the store.

Why: on the token tensors (rows = batch * L up to 245,760, C = 64..320; the residual stream is float32) a
CUDA-graphed training step spent a large part of its GPU time in such small kernels; these are memory bound,
and one pass reads x once and writes y once (backward: reads x and dy, writes dx and tiny partial sums).
H200, fwd+bwd replayed from a CUDA graph (tools/gpu/bench_dyt.py, docs/benchmarks/h200/2026-12-02-s6/dyt/):
0.50 -> 0.12 ms at (2, 122880, 64) float32 -> bfloat16 (Mamba layer), 0.57 -> 0.12 ms float32 (HoME layer), 0.06 -> 0.02 ms at
(2, 240, 320). Eagerly it is slower (0.69 -> 0.86 ms and 0.62 -> 1.20 ms: the custom op's Python dispatch and
the Triton launches cost more than PyTorch's 11 kernel launches), so it pays in CUDA-graphed steps, the default
on GPUs.
Design:
- a program works on 2D tiles of BLOCK_R rows x next_power_of_2(C) columns (TILE elements; C = 48 or 320 are
  masked columns), so weight and bias are loaded once per program;
- forward: one tile per program;
- backward: t = tanh(alpha x) is recomputed from x (not saved), dx = dy * weight * alpha * (1 - t^2); each
  program walks a fixed run of tiles and writes its float32 partial sums of dy*t (dweight), dy (dbias) and
  dy*weight*x*(1 - t^2) (dalpha) to one row of a buffer, reduced over the programs with one `torch.sum`.
  Deterministic (no atomics; the partition depends only on the shape).
Registered as custom ops (`mambahome::dyt_triton_fwd` / `_bwd`, fakes, autograd), so torch.compile and
CUDA-graph capture see single ops. Runs on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1), which
the CPU tests use.
Numerics: computed in float32 registers, rounded once at the store. With float32 x and output this is today's
result to rounding (tanh is computed from exp, `_tanh`: at most 3.3 float32 ulp from the exact tanh under the
interpreter, against 0.5 for torch.tanh on CPUs; on the H200 max relative error 2.9e-7 against torch.tanh's
1.8e-7; gradients within 2e-6 relative of PyTorch's). With half inputs or output
it is slightly more accurate than PyTorch's math in the half dtype, which rounds alpha*x, tanh, the weight and
(in backward) every intermediate to that dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

TILE = 4096  # elements of a BLOCK_R x BLOCK_C tile
MAX_PARTS = 1024  # backward programs at most, so the partial sums stay a small buffer
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _tanh(z):
    """tanh in float32 from exp (Triton's interpreter has no libdevice): (1 - e) / (1 + e) with e = exp(-2|z|) and
    z's sign (no overflow), and for |z| < 0.3, where 1 - e cancels, the odd Taylor series to z^11 (truncation
    < 2e-9 relative)."""
    a = tl.abs(z)
    e = tl.exp(-2.0 * a)
    big = (1.0 - e) / (1.0 + e)
    s = z * z
    poly = -1.0 / 3.0 + s * (2.0 / 15.0 + s * (-17.0 / 315.0 + s * (62.0 / 2835.0 + s * (-1382.0 / 155925.0))))
    return tl.where(a < 0.3, z + z * s * poly, tl.where(z < 0, -big, big))


@triton.jit
def _tile(row0, rows, C, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Element offsets and mask of the tile whose first row is row0."""
    r = row0 + tl.arange(0, BLOCK_R)
    c = tl.arange(0, BLOCK_C)
    offs = r.to(tl.int64)[:, None] * C + c[None, :]
    return offs, (r < rows)[:, None] & (c < C)[None, :]


@triton.jit
def _fwd_kernel(x_ptr, y_ptr, alpha_ptr, w_ptr, b_ptr, rows, C, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    c = tl.arange(0, BLOCK_C)
    alpha = tl.load(alpha_ptr).to(tl.float32)
    w = tl.load(w_ptr + c, mask=c < C, other=0.0).to(tl.float32)[None, :]
    b = tl.load(b_ptr + c, mask=c < C, other=0.0).to(tl.float32)[None, :]
    offs, mask = _tile(tl.program_id(0) * BLOCK_R, rows, C, BLOCK_R, BLOCK_C)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, (w * _tanh(alpha * x) + b).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(x_ptr, dy_ptr, dx_ptr, alpha_ptr, w_ptr, part_ptr, rows, C, tiles_per_part,
                BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx of tiles_per_part tiles; part[program] = (sum dy*t per column, sum dy per column, sum dy*w*x*(1-t^2))."""
    part = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    alpha = tl.load(alpha_ptr).to(tl.float32)
    w = tl.load(w_ptr + c, mask=c < C, other=0.0).to(tl.float32)[None, :]
    acc_t = tl.zeros((BLOCK_R, BLOCK_C), tl.float32)
    acc_dy = tl.zeros((BLOCK_R, BLOCK_C), tl.float32)
    acc_alpha = tl.zeros((BLOCK_R, BLOCK_C), tl.float32)
    for i in range(tiles_per_part):
        offs, mask = _tile((part * tiles_per_part + i) * BLOCK_R, rows, C, BLOCK_R, BLOCK_C)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # 0 where masked: no contribution
        t = _tanh(alpha * x)
        gws = g * w * (1.0 - t * t)
        tl.store(dx_ptr + offs, (gws * alpha).to(dx_ptr.dtype.element_ty), mask=mask)
        acc_t += g * t
        acc_dy += g
        acc_alpha += gws * x
    out = part_ptr + part * (2 * C + 1)
    tl.store(out + c, tl.sum(acc_t, 0), mask=c < C)
    tl.store(out + C + c, tl.sum(acc_dy, 0), mask=c < C)
    tl.store(out + 2 * C, tl.sum(tl.sum(acc_alpha, 1), 0))


def _layout(op: str, x: Tensor, alpha: Tensor, weight: Tensor) -> tuple[int, int, int, int]:
    """(rows, C, BLOCK_R, BLOCK_C) of x (..., C); ValueError naming `op` for shapes or dtypes it cannot take."""
    if x.dim() < 1 or x.shape[-1] < 1 or x.dtype not in _DTYPES:
        raise ValueError(f"{op}: expected x (..., C) of float32/float16/bfloat16, got shape {tuple(x.shape)} "
                         f"{x.dtype}")
    C = x.shape[-1]
    if weight.shape != (C,):
        raise ValueError(f"{op}: expected weight and bias of shape ({C},) for x {tuple(x.shape)}, got weight "
                         f"{tuple(weight.shape)}")
    if alpha.numel() != 1:
        raise ValueError(f"{op}: expected a 1-element alpha, got shape {tuple(alpha.shape)}")
    block_c = triton.next_power_of_2(C)
    return x.numel() // C, C, max(1, TILE // block_c), block_c


def _fwd(x: Tensor, alpha: Tensor, weight: Tensor, bias: Tensor, out_dtype: torch.dtype) -> Tensor:
    op = "dyt (triton) forward"
    rows, C, block_r, block_c = _layout(op, x, alpha, weight)
    if bias.shape != weight.shape or out_dtype not in _DTYPES:
        raise ValueError(f"{op}: expected bias of shape ({C},) and a float32/float16/bfloat16 out_dtype, got "
                         f"bias {tuple(bias.shape)}, {out_dtype}")
    x = x.contiguous()
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    _fwd_kernel[(triton.cdiv(rows, block_r),)](x, y, alpha, weight.contiguous(), bias.contiguous(), rows, C,
                                               BLOCK_R=block_r, BLOCK_C=block_c)
    return y


def _bwd(x: Tensor, alpha: Tensor, weight: Tensor, dy: Tensor) -> list[Tensor]:
    op = "dyt (triton) backward"
    rows, C, block_r, block_c = _layout(op, x, alpha, weight)
    if dy.shape != x.shape:
        raise ValueError(f"{op}: expected dy of x's shape {tuple(x.shape)}, got {tuple(dy.shape)}")
    x, dy = x.contiguous(), dy.contiguous()
    n_tiles = triton.cdiv(rows, block_r)
    tiles_per_part = max(1, triton.cdiv(n_tiles, MAX_PARTS))
    n_parts = triton.cdiv(n_tiles, tiles_per_part)  # 0 for an empty x: no launch, and the sums are zeros
    part = torch.empty((n_parts, 2 * C + 1), dtype=torch.float32, device=x.device)
    dx = torch.empty_like(x)
    _bwd_kernel[(n_parts,)](x, dy, dx, alpha, weight.contiguous(), part, rows, C, tiles_per_part,
                            BLOCK_R=block_r, BLOCK_C=block_c)
    return [dx, part.sum(0)]


@torch.library.custom_op("mambahome::dyt_triton_fwd", mutates_args=())
def dyt_fwd(x: Tensor, alpha: Tensor, weight: Tensor, bias: Tensor, out_dtype: torch.dtype) -> Tensor:
    """y = weight * tanh(alpha * x) + bias in `out_dtype`, x's shape (contiguous)."""
    return _fwd(x, alpha, weight, bias, out_dtype)


@dyt_fwd.register_fake
def _(x, alpha, weight, bias, out_dtype):
    return torch.empty(x.shape, dtype=out_dtype, device=x.device)


@torch.library.custom_op("mambahome::dyt_triton_bwd", mutates_args=())
def dyt_bwd(x: Tensor, alpha: Tensor, weight: Tensor, dy: Tensor) -> list[Tensor]:
    """[dx, dparams]: dx in x's dtype; dparams float32 (2C + 1,) = dweight, dbias, dalpha concatenated (one
    tensor: a custom op's outputs may not be views of one another)."""
    return _bwd(x, alpha, weight, dy)


@dyt_bwd.register_fake
def _(x, alpha, weight, dy):
    return [torch.empty(x.shape, dtype=x.dtype, device=x.device),
            torch.empty((2 * x.shape[-1] + 1,), dtype=torch.float32, device=x.device)]


def _setup(ctx, inputs, output):
    x, alpha, weight, bias, out_dtype = inputs
    ctx.save_for_backward(x, alpha, weight)


def _backward(ctx, grad):
    x, alpha, weight = ctx.saved_tensors
    dx, dparams = dyt_bwd(x, alpha, weight, grad)
    C = weight.shape[0]
    dweight, dbias, dalpha = dparams.split([C, C, 1])  # autograd casts them to the parameters' dtypes
    return dx, dalpha.view(alpha.shape), dweight, dbias, None


dyt_fwd.register_autograd(_backward, setup_context=_setup)


def dyt_triton(x: Tensor, alpha: Tensor, weight: Tensor, bias: Tensor,
               out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """`ops.dyt_ref(x, alpha, weight, bias)` computed in float32 and stored in `out_dtype` (default x's dtype),
    differentiable in all four tensors; alpha must already be clamped."""
    return dyt_fwd(x, alpha, weight, bias, x.dtype if out_dtype is None else out_dtype)
