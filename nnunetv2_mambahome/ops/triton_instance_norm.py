"""Instance normalisation in Triton, forward and backward: the `F.instance_norm` of nnU-Net's conv blocks and
the GSC, without cuDNN's slow kernels for few, very long rows.

y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c], statistics per (sample, channel) over all spatial
positions (biased variance), as `torch.nn.functional.instance_norm` without running statistics (its readable
reference, compared in the tests). Any number of spatial dimensions; x float32/float16/bfloat16, statistics
and accumulation float32, output in x's dtype; weight and bias optional (the GSC's norms have none).

Why our own kernel: PyTorch runs instance norm as a batch norm over N*C "channels", and cuDNN's kernels for that
give each channel one thread block. At the first stage of the 502 plans (2 x 32 channels of 983,040 voxels)
that is 64 blocks on a 132-SM H200: its backward took 786 us per call against ~150 us of memory traffic,
10.2 ms of a 76 ms step in all (docs/BENCHMARKS.md). Here every row is split over many programs:
- statistics: each (row, split) program reduces its slice with a shift (its first value), giving count, mean
  and M2 of the slice without cancellation;
- normalise: every program merges its row's splits with Chan's formula (a few dozen values), then one
  element-wise pass with the affine parameters;
- backward: per (row, split) partial sums of dy and dy*xhat; every dx program sums its row's partials, then
  dx = rstd * (w dy - mean(w dy) - xhat mean(w dy xhat)) in one pass; dweight and dbias are one `torch.sum` each.
So a forward is two kernel launches and a backward two plus one reduction per affine parameter: a step runs
dozens of norms, and in eager mode (no CUDA graph) every small torch op between the kernels costs a launch.
Deterministic (no atomics). Registered as custom ops (`mambahome::instance_norm_triton_fwd` / `_bwd`, fakes,
autograd), so torch.compile and CUDA-graph capture see single ops. Runs on CPU tensors under Triton's
interpreter (TRITON_INTERPRET=1), which the CPU tests use.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK = 1024  # elements per load
SPLIT_TARGET = 16384  # elements per (row, split) program: enough programs for long rows, few partials


@triton.jit
def _stats_kernel(x_ptr, part_ptr, M, split_len, n_splits, BLOCK: tl.constexpr):
    """part[row, split] = (count, mean, M2) of x[row, split*split_len : (split+1)*split_len]."""
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    start = split * split_len
    end = tl.minimum(start + split_len, M)
    base = x_ptr + row * M
    shift = tl.load(base + start).to(tl.float32)
    s = tl.zeros((BLOCK,), tl.float32)
    q = tl.zeros((BLOCK,), tl.float32)
    for off in range(start, end, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        mask = idx < end
        v = tl.where(mask, tl.load(base + idx, mask=mask, other=0.0).to(tl.float32) - shift, 0.0)
        s += v
        q += v * v
    n = (end - start).to(tl.float32)
    s_sum = tl.sum(s, 0)
    out = part_ptr + (row * n_splits + split) * 3
    tl.store(out, n)
    tl.store(out + 1, shift + s_sum / n)
    tl.store(out + 2, tl.sum(q, 0) - s_sum * s_sum / n)


@triton.jit
def _merged_stats(part_ptr, row, M, n_splits, eps, BLOCK_S: tl.constexpr):
    """(mean, rstd) of a row from its splits' (count, mean, M2), merged with Chan's formula."""
    s = tl.arange(0, BLOCK_S)
    mask = s < n_splits
    p = part_ptr + (row * n_splits + s) * 3
    count = tl.load(p, mask=mask, other=0.0)
    means = tl.load(p + 1, mask=mask, other=0.0)
    m2 = tl.load(p + 2, mask=mask, other=0.0)
    mean = tl.sum(count * means, 0) / M
    d = means - mean
    var = tl.sum(m2 + count * d * d, 0) / M
    return mean, 1.0 / tl.sqrt_rn(var + eps)


@triton.jit
def _normalise_kernel(x_ptr, y_ptr, part_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, M, C, split_len, n_splits, eps,
                      HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK: tl.constexpr, BLOCK_S: tl.constexpr):
    """y = x * scale + shift per row; every program merges its row's statistics, split 0 also stores them."""
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    start = split * split_len
    end = tl.minimum(start + split_len, M)
    mean, rstd = _merged_stats(part_ptr, row, M, n_splits, eps, BLOCK_S)
    if split == 0:
        tl.store(mean_ptr + row, mean)
        tl.store(rstd_ptr + row, rstd)
    scale = rstd
    shift = -mean * scale
    if HAS_W:
        w = tl.load(w_ptr + row % C).to(tl.float32)
        scale = scale * w
        shift = shift * w
    if HAS_B:
        shift = shift + tl.load(b_ptr + row % C).to(tl.float32)
    for off in range(start, end, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        mask = idx < end
        v = tl.load(x_ptr + row * M + idx, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * M + idx, (v * scale + shift).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_sums_kernel(x_ptr, dy_ptr, mean_ptr, rstd_ptr, part_ptr, M, split_len, n_splits, n_parts,
                     BLOCK: tl.constexpr):
    """part[0, row, split] = sum dy and part[1, row, split] = sum dy * xhat over the split."""
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    start = split * split_len
    end = tl.minimum(start + split_len, M)
    mean = tl.load(mean_ptr + row)
    rstd = tl.load(rstd_ptr + row)
    sd = tl.zeros((BLOCK,), tl.float32)
    sdx = tl.zeros((BLOCK,), tl.float32)
    for off in range(start, end, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        mask = idx < end
        v = tl.load(x_ptr + row * M + idx, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(dy_ptr + row * M + idx, mask=mask, other=0.0).to(tl.float32)
        sd += g
        sdx += tl.where(mask, g * (v - mean) * rstd, 0.0)
    out = part_ptr + row * n_splits + split
    tl.store(out, tl.sum(sd, 0))
    tl.store(out + n_parts, tl.sum(sdx, 0))


@triton.jit
def _dx_kernel(x_ptr, dy_ptr, dx_ptr, mean_ptr, rstd_ptr, w_ptr, part_ptr, M, C, split_len, n_splits, n_parts,
               HAS_W: tl.constexpr, BLOCK: tl.constexpr, BLOCK_S: tl.constexpr):
    """dx = rstd * (w dy - mean(w dy) - xhat * mean(w dy xhat)), the two means summed from the row's splits."""
    row = tl.program_id(0).to(tl.int64)
    start = tl.program_id(1) * split_len
    end = tl.minimum(start + split_len, M)
    mean = tl.load(mean_ptr + row)
    rstd = tl.load(rstd_ptr + row)
    s = tl.arange(0, BLOCK_S)
    p = part_ptr + row * n_splits + s
    mg = tl.sum(tl.load(p, mask=s < n_splits, other=0.0), 0) / M
    mgx = tl.sum(tl.load(p + n_parts, mask=s < n_splits, other=0.0), 0) / M
    w = 1.0
    if HAS_W:
        w = tl.load(w_ptr + row % C).to(tl.float32)
        mg = mg * w
        mgx = mgx * w
    for off in range(start, end, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        mask = idx < end
        v = tl.load(x_ptr + row * M + idx, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(dy_ptr + row * M + idx, mask=mask, other=0.0).to(tl.float32)
        xhat = (v - mean) * rstd
        tl.store(dx_ptr + row * M + idx, (rstd * (w * g - mg - xhat * mgx)).to(dx_ptr.dtype.element_ty), mask=mask)


def _layout(x: Tensor) -> tuple[int, int, int, int, int]:
    """(rows N*C, channels C, row length M, split length, number of splits) of x (N, C, *spatial)."""
    if x.dim() < 3:
        raise ValueError(f"instance norm (triton): expected (batch, channels, *spatial), got shape {tuple(x.shape)}")
    rows, C = x.shape[0] * x.shape[1], x.shape[1]
    M = x[0, 0].numel()
    if M < 2:  # as F.instance_norm, which refuses to normalise a single value per channel
        raise ValueError(f"instance norm (triton): expected more than 1 spatial element, got input size "
                         f"{tuple(x.shape)}")
    n_splits = triton.cdiv(M, SPLIT_TARGET)
    split_len = triton.cdiv(triton.cdiv(M, n_splits), BLOCK) * BLOCK
    return rows, C, M, split_len, triton.cdiv(M, split_len)


def _splits_block(n_splits: int) -> int:
    """Lanes that hold one row's split partials (few values of it, so few compiled variants)."""
    return max(16, triton.next_power_of_2(n_splits))


def _fwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float) -> list[Tensor]:
    x = x.contiguous()
    rows, C, M, split_len, n_splits = _layout(x)
    part = torch.empty((rows, n_splits, 3), dtype=torch.float32, device=x.device)
    _stats_kernel[(rows, n_splits)](x, part, M, split_len, n_splits, BLOCK=BLOCK)
    mean = torch.empty((rows,), dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    y = torch.empty_like(x)
    _normalise_kernel[(rows, n_splits)](x, y, part, mean, rstd, weight if weight is not None else x,
                                        bias if bias is not None else x, M, C, split_len, n_splits, eps,
                                        HAS_W=weight is not None, HAS_B=bias is not None, BLOCK=BLOCK,
                                        BLOCK_S=_splits_block(n_splits))
    return [y, mean, rstd]


def _bwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, rstd: Tensor,
         dy: Tensor) -> list[Tensor]:
    x, dy = x.contiguous(), dy.contiguous()
    rows, C, M, split_len, n_splits = _layout(x)
    part = torch.empty((2, rows, n_splits), dtype=torch.float32, device=x.device)  # sum dy, sum dy * xhat
    _bwd_sums_kernel[(rows, n_splits)](x, dy, mean, rstd, part, M, split_len, n_splits, rows * n_splits,
                                       BLOCK=BLOCK)
    dx = torch.empty_like(x)
    _dx_kernel[(rows, n_splits)](x, dy, dx, mean, rstd, weight if weight is not None else x, part, M, C,
                                 split_len, n_splits, rows * n_splits, HAS_W=weight is not None, BLOCK=BLOCK,
                                 BLOCK_S=_splits_block(n_splits))
    per_channel = part.view(2, x.shape[0], C, n_splits)
    dw = per_channel[1].sum((0, 2)).to(weight.dtype) if weight is not None else x.new_empty(0)
    db = per_channel[0].sum((0, 2)).to(bias.dtype) if bias is not None else x.new_empty(0)
    return [dx, dw, db]


@torch.library.custom_op("mambahome::instance_norm_triton_fwd", mutates_args=())
def instance_norm_fwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float) -> list[Tensor]:
    """[y, mean, rstd]: y in x's dtype and shape (contiguous), mean/rstd float32 per (sample, channel)."""
    return _fwd(x, weight, bias, eps)


@instance_norm_fwd.register_fake
def _(x, weight, bias, eps):
    rows = x.shape[0] * x.shape[1]
    stat = torch.empty((rows,), dtype=torch.float32, device=x.device)
    return [torch.empty(x.shape, dtype=x.dtype, device=x.device), stat, torch.empty_like(stat)]


@torch.library.custom_op("mambahome::instance_norm_triton_bwd", mutates_args=())
def instance_norm_bwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, rstd: Tensor,
                      dy: Tensor) -> list[Tensor]:
    """[dx, dweight, dbias] (dweight/dbias empty when absent)."""
    return _bwd(x, weight, bias, mean, rstd, dy)


@instance_norm_bwd.register_fake
def _(x, weight, bias, mean, rstd, dy):
    return [torch.empty(x.shape, dtype=x.dtype, device=x.device),
            torch.empty_like(weight) if weight is not None else x.new_empty(0),
            torch.empty_like(bias) if bias is not None else x.new_empty(0)]


def _setup(ctx, inputs, output):
    x, weight, bias, eps = inputs
    ctx.has = (weight is not None, bias is not None)
    ctx.save_for_backward(x, weight, bias, output[1], output[2])


def _backward(ctx, grads):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    dx, dw, db = instance_norm_bwd(x, weight, bias, mean, rstd, grads[0])
    return dx, dw if ctx.has[0] else None, db if ctx.has[1] else None, None


instance_norm_fwd.register_autograd(_backward, setup_context=_setup)


def instance_norm_triton(x: Tensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                         eps: float = 1e-5) -> Tensor:
    """`F.instance_norm(x, weight=weight, bias=bias, eps=eps)` (no running statistics), differentiable."""
    return instance_norm_fwd(x, weight, bias, eps)[0]
