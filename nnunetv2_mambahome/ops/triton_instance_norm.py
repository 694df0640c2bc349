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
Channels-last inputs (`is_channels_last`: x lies in memory as (N, *spatial, C), as `torch.channels_last{,_3d}`
and the channels-last networks of `nets.layout` keep it, so that cuDNN's convolutions need no NCDHW <-> NDHWC
conversions) are read and written in place, never copied to the standard layout: x is viewed as (N, S, C) and
tiled in [BLOCK_S positions, BLOCK_C <= 32 channels] tiles, contiguous (coalesced) along C. The same four
passes run per (sample, split of S, channel block) program, with per-channel vectors where the rows have
scalars: shifted statistics; normalise programs merging their sample's splits with Chan's formula; partial sums
of dy and dy*xhat; dx programs summing them. The merges read BLOCK_P splits at a time, and a split spans at
least sqrt(CL_MERGE * S) positions, so the partials each program merges stay ~3 / CL_MERGE of what it streams
(these block sizes are not yet measured on a GPU). Same launches and saved tensors (mean/rstd per (sample,
channel)); y and dx come out channels-last; dy is made channels-last only where it arrives otherwise. Inputs
that are contiguous (C == 1 included) take the row kernels; others are copied to contiguous first.
Deterministic (no atomics). Registered as custom ops (`mambahome::instance_norm_triton_fwd` / `_bwd`, fakes,
autograd), so torch.compile and CUDA-graph capture see single ops. Runs on CPU tensors under Triton's
interpreter (TRITON_INTERPRET=1), which the CPU tests use.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK = 1024  # elements per load
SPLIT_TARGET = 16384  # elements per (row, split) program: enough programs for long rows, few partials
# channels-last (N, S, C) path: tiles of CL_TILE elements, CL_BLOCK_C channels wide (128 contiguous bytes of
# float32 per tile row); a split spans >= SPLIT_TARGET elements and >= sqrt(CL_MERGE * S) positions, so the
# partials every program merges (3 per split and channel) stay ~3 / CL_MERGE of the elements it streams
CL_BLOCK_C = 32
CL_TILE = 2048
CL_MERGE = 32
CL_MERGE_BLOCK = 16  # splits merged per loop step (bounded registers however many splits)


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


@triton.jit
def _cl_stats_kernel(x_ptr, part_ptr, S, C, split_len, n_splits, n_parts, BLOCK_S: tl.constexpr,
                     BLOCK_C: tl.constexpr):
    """part[0 / 1, n, split, c] = mean / M2 of x[n, split positions, c], x (N, S, C) contiguous, each channel
    shifted by its first value in the split (no cancellation)."""
    n = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    start = split * split_len
    end = tl.minimum(start + split_len, S)
    base = x_ptr + n * S * C
    shift = tl.load(base + start * C + c, mask=cmask, other=0.0).to(tl.float32)
    acc_s = tl.zeros((BLOCK_S, BLOCK_C), tl.float32)
    acc_q = tl.zeros((BLOCK_S, BLOCK_C), tl.float32)
    for off in range(start, end, BLOCK_S):
        pos = off + tl.arange(0, BLOCK_S)
        mask = (pos < end)[:, None] & cmask[None, :]
        v = tl.load(base + pos[:, None] * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
        v = tl.where(mask, v - shift[None, :], 0.0)
        acc_s += v
        acc_q += v * v
    count = (end - start).to(tl.float32)
    s_sum = tl.sum(acc_s, 0)
    out = part_ptr + (n * n_splits + split) * C + c
    tl.store(out, shift + s_sum / count, mask=cmask)
    tl.store(out + n_parts, tl.sum(acc_q, 0) - s_sum * s_sum / count, mask=cmask)


@triton.jit
def _cl_merged_stats(part_ptr, n, c, cmask, S, C, split_len, n_splits, n_parts, eps, BLOCK_P: tl.constexpr,
                     BLOCK_C: tl.constexpr):
    """(mean, rstd) per channel of sample n from its splits' (mean, M2) with Chan's formula, in two passes over
    BLOCK_P splits at a time (the counts follow from split_len)."""
    base = part_ptr + n * n_splits * C
    total = tl.zeros((BLOCK_C,), tl.float32)
    for p0 in range(0, n_splits, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < n_splits
        count = tl.where(pmask, tl.minimum(S - p * split_len, split_len), 0).to(tl.float32)
        m = tl.load(base + p[:, None] * C + c[None, :], mask=pmask[:, None] & cmask[None, :], other=0.0)
        total += tl.sum(count[:, None] * m, 0)
    mean = total / S
    m2 = tl.zeros((BLOCK_C,), tl.float32)
    for p0 in range(0, n_splits, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < n_splits
        count = tl.where(pmask, tl.minimum(S - p * split_len, split_len), 0).to(tl.float32)
        mask = pmask[:, None] & cmask[None, :]
        m = tl.load(base + p[:, None] * C + c[None, :], mask=mask, other=0.0)
        q = tl.load(base + n_parts + p[:, None] * C + c[None, :], mask=mask, other=0.0)
        d = m - mean[None, :]
        m2 += tl.sum(q + count[:, None] * d * d, 0)
    return mean, 1.0 / tl.sqrt_rn(m2 / S + eps)


@triton.jit
def _cl_normalise_kernel(x_ptr, y_ptr, part_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, S, C, split_len, n_splits,
                         n_parts, eps, HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK_S: tl.constexpr,
                         BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """y = x * scale[c] + shift[c] over one (sample, split, channel block) tile range of x (N, S, C); every
    program merges its channels' statistics, split 0 also stores them (mean/rstd indexed n * C + c)."""
    n = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    start = split * split_len
    end = tl.minimum(start + split_len, S)
    mean, rstd = _cl_merged_stats(part_ptr, n, c, cmask, S, C, split_len, n_splits, n_parts, eps, BLOCK_P, BLOCK_C)
    if split == 0:
        tl.store(mean_ptr + n * C + c, mean, mask=cmask)
        tl.store(rstd_ptr + n * C + c, rstd, mask=cmask)
    scale = rstd
    shift = -mean * scale
    if HAS_W:
        w = tl.load(w_ptr + c, mask=cmask, other=0.0).to(tl.float32)
        scale = scale * w
        shift = shift * w
    if HAS_B:
        shift = shift + tl.load(b_ptr + c, mask=cmask, other=0.0).to(tl.float32)
    base = n * S * C
    for off in range(start, end, BLOCK_S):
        pos = off + tl.arange(0, BLOCK_S)
        mask = (pos < end)[:, None] & cmask[None, :]
        idx = base + pos[:, None] * C + c[None, :]
        v = tl.load(x_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + idx, (v * scale[None, :] + shift[None, :]).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _cl_bwd_sums_kernel(x_ptr, dy_ptr, mean_ptr, rstd_ptr, part_ptr, S, C, split_len, n_splits, n_parts,
                        BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    """part[0, n, split, c] = sum dy and part[1, n, split, c] = sum dy * xhat over the split, x/dy (N, S, C)."""
    n = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    start = split * split_len
    end = tl.minimum(start + split_len, S)
    mean = tl.load(mean_ptr + n * C + c, mask=cmask, other=0.0)
    rstd = tl.load(rstd_ptr + n * C + c, mask=cmask, other=0.0)
    sd = tl.zeros((BLOCK_S, BLOCK_C), tl.float32)
    sdx = tl.zeros((BLOCK_S, BLOCK_C), tl.float32)
    base = n * S * C
    for off in range(start, end, BLOCK_S):
        pos = off + tl.arange(0, BLOCK_S)
        mask = (pos < end)[:, None] & cmask[None, :]
        idx = base + pos[:, None] * C + c[None, :]
        v = tl.load(x_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(dy_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        sd += g
        sdx += tl.where(mask, g * (v - mean[None, :]) * rstd[None, :], 0.0)
    out = part_ptr + (n * n_splits + split) * C + c
    tl.store(out, tl.sum(sd, 0), mask=cmask)
    tl.store(out + n_parts, tl.sum(sdx, 0), mask=cmask)


@triton.jit
def _cl_dx_kernel(x_ptr, dy_ptr, dx_ptr, mean_ptr, rstd_ptr, w_ptr, part_ptr, S, C, split_len, n_splits, n_parts,
                  HAS_W: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """dx = rstd * (w dy - mean(w dy) - xhat * mean(w dy xhat)) per channel, x/dy/dx (N, S, C), the two means
    summed from the sample's splits BLOCK_P at a time."""
    n = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    start = split * split_len
    end = tl.minimum(start + split_len, S)
    mean = tl.load(mean_ptr + n * C + c, mask=cmask, other=0.0)
    rstd = tl.load(rstd_ptr + n * C + c, mask=cmask, other=0.0)
    sg = tl.zeros((BLOCK_C,), tl.float32)
    sgx = tl.zeros((BLOCK_C,), tl.float32)
    pbase = part_ptr + n * n_splits * C
    for p0 in range(0, n_splits, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = (p < n_splits)[:, None] & cmask[None, :]
        pidx = p[:, None] * C + c[None, :]
        sg += tl.sum(tl.load(pbase + pidx, mask=pmask, other=0.0), 0)
        sgx += tl.sum(tl.load(pbase + n_parts + pidx, mask=pmask, other=0.0), 0)
    mg = sg / S
    mgx = sgx / S
    w = tl.full((BLOCK_C,), 1.0, tl.float32)
    if HAS_W:
        w = tl.load(w_ptr + c, mask=cmask, other=0.0).to(tl.float32)
        mg = mg * w
        mgx = mgx * w
    base = n * S * C
    for off in range(start, end, BLOCK_S):
        pos = off + tl.arange(0, BLOCK_S)
        mask = (pos < end)[:, None] & cmask[None, :]
        idx = base + pos[:, None] * C + c[None, :]
        v = tl.load(x_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(dy_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        xhat = (v - mean[None, :]) * rstd[None, :]
        dx = rstd[None, :] * (w[None, :] * g - mg[None, :] - xhat * mgx[None, :])
        tl.store(dx_ptr + idx, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def is_channels_last(x: Tensor) -> bool:
    """Whether x (N, C, *spatial) lies in memory as (N, *spatial, C) and not also as (N, C, *spatial): the
    channels-last kernels' layout (`torch.channels_last{,_3d}` for 4D/5D, strides (L*C, 1, C) for 3D)."""
    return x.dim() >= 3 and not x.is_contiguous() and x.movedim(1, -1).is_contiguous()


def _like(x: Tensor) -> Tensor:
    """An uninitialised y/dx for x: x's channels-last layout, else standard contiguous (real ops and fakes)."""
    return torch.empty_like(x) if is_channels_last(x) else torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _in_layout(t: Tensor, channels_last: bool) -> Tensor:
    """t (dy) in the layout the kernels read: channels-last or contiguous, copied only where it is not."""
    if not channels_last:
        return t.contiguous()
    return t if t.movedim(1, -1).is_contiguous() else t.movedim(1, -1).contiguous().movedim(-1, 1)


def _check(x: Tensor) -> int:
    """Spatial positions per (sample, channel) of x (N, C, *spatial); ValueError as F.instance_norm's."""
    if x.dim() < 3:
        raise ValueError(f"instance norm (triton): expected (batch, channels, *spatial), got shape {tuple(x.shape)}")
    M = x[0, 0].numel()
    if M < 2:  # as F.instance_norm, which refuses to normalise a single value per channel
        raise ValueError(f"instance norm (triton): expected more than 1 spatial element, got input size "
                         f"{tuple(x.shape)}")
    return M


def _layout(x: Tensor) -> tuple[int, int, int, int, int]:
    """(rows N*C, channels C, row length M, split length, number of splits) of x (N, C, *spatial)."""
    M = _check(x)
    rows, C = x.shape[0] * x.shape[1], x.shape[1]
    n_splits = triton.cdiv(M, SPLIT_TARGET)
    split_len = triton.cdiv(triton.cdiv(M, n_splits), BLOCK) * BLOCK
    return rows, C, M, split_len, triton.cdiv(M, split_len)


def _cl_layout(x: Tensor) -> tuple[int, int, int, int, int, int, int]:
    """(N, C, S, split length, number of splits, BLOCK_S, BLOCK_C) of a channels-last x viewed as (N, S, C)."""
    S = _check(x)
    N, C = x.shape[0], x.shape[1]
    block_c = min(CL_BLOCK_C, triton.next_power_of_2(C))
    block_s = CL_TILE // block_c
    split_len = max(triton.cdiv(SPLIT_TARGET, block_c), math.isqrt(CL_MERGE * S))
    split_len = triton.cdiv(split_len, block_s) * block_s
    return N, C, S, split_len, triton.cdiv(S, split_len), block_s, block_c


def _splits_block(n_splits: int) -> int:
    """Lanes that hold one row's split partials (few values of it, so few compiled variants)."""
    return max(16, triton.next_power_of_2(n_splits))


def _fwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float) -> list[Tensor]:
    if is_channels_last(x):
        return _cl_fwd(x, weight, bias, eps)
    x = x.contiguous()
    rows, C, M, split_len, n_splits = _layout(x)
    part = torch.empty((rows, n_splits, 3), dtype=torch.float32, device=x.device)
    _stats_kernel[(rows, n_splits)](x, part, M, split_len, n_splits, BLOCK=BLOCK)
    mean = torch.empty((rows,), dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    y = _like(x)
    _normalise_kernel[(rows, n_splits)](x, y, part, mean, rstd, weight if weight is not None else x,
                                        bias if bias is not None else x, M, C, split_len, n_splits, eps,
                                        HAS_W=weight is not None, HAS_B=bias is not None, BLOCK=BLOCK,
                                        BLOCK_S=_splits_block(n_splits))
    return [y, mean, rstd]


def _cl_fwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float) -> list[Tensor]:
    """`_fwd` of a channels-last x: two launches over (sample, split, channel block); y channels-last."""
    N, C, S, split_len, n_splits, block_s, block_c = _cl_layout(x)
    grid = (N, n_splits, triton.cdiv(C, block_c))
    part = torch.empty((2, N, n_splits, C), dtype=torch.float32, device=x.device)  # mean, M2
    _cl_stats_kernel[grid](x, part, S, C, split_len, n_splits, N * n_splits * C, BLOCK_S=block_s, BLOCK_C=block_c)
    mean = torch.empty((N * C,), dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    y = _like(x)
    _cl_normalise_kernel[grid](x, y, part, mean, rstd, weight if weight is not None else x,
                               bias if bias is not None else x, S, C, split_len, n_splits, N * n_splits * C, eps,
                               HAS_W=weight is not None, HAS_B=bias is not None, BLOCK_S=block_s, BLOCK_C=block_c,
                               BLOCK_P=CL_MERGE_BLOCK)
    return [y, mean, rstd]


def _bwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, rstd: Tensor,
         dy: Tensor) -> list[Tensor]:
    if is_channels_last(x):
        return _cl_bwd(x, weight, bias, mean, rstd, _in_layout(dy, True))
    x, dy = x.contiguous(), dy.contiguous()
    rows, C, M, split_len, n_splits = _layout(x)
    part = torch.empty((2, rows, n_splits), dtype=torch.float32, device=x.device)  # sum dy, sum dy * xhat
    _bwd_sums_kernel[(rows, n_splits)](x, dy, mean, rstd, part, M, split_len, n_splits, rows * n_splits,
                                       BLOCK=BLOCK)
    dx = _like(x)
    _dx_kernel[(rows, n_splits)](x, dy, dx, mean, rstd, weight if weight is not None else x, part, M, C,
                                 split_len, n_splits, rows * n_splits, HAS_W=weight is not None, BLOCK=BLOCK,
                                 BLOCK_S=_splits_block(n_splits))
    per_channel = part.view(2, x.shape[0], C, n_splits)
    dw = per_channel[1].sum((0, 2)).to(weight.dtype) if weight is not None else x.new_empty(0)
    db = per_channel[0].sum((0, 2)).to(bias.dtype) if bias is not None else x.new_empty(0)
    return [dx, dw, db]


def _cl_bwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, rstd: Tensor,
            dy: Tensor) -> list[Tensor]:
    """`_bwd` of a channels-last x and dy: two launches over (sample, split, channel block); dx channels-last."""
    N, C, S, split_len, n_splits, block_s, block_c = _cl_layout(x)
    grid = (N, n_splits, triton.cdiv(C, block_c))
    part = torch.empty((2, N, n_splits, C), dtype=torch.float32, device=x.device)  # sum dy, sum dy * xhat
    _cl_bwd_sums_kernel[grid](x, dy, mean, rstd, part, S, C, split_len, n_splits, N * n_splits * C,
                              BLOCK_S=block_s, BLOCK_C=block_c)
    dx = _like(x)
    _cl_dx_kernel[grid](x, dy, dx, mean, rstd, weight if weight is not None else x, part, S, C, split_len,
                        n_splits, N * n_splits * C, HAS_W=weight is not None, BLOCK_S=block_s, BLOCK_C=block_c,
                        BLOCK_P=CL_MERGE_BLOCK)
    dw = part[1].sum((0, 1)).to(weight.dtype) if weight is not None else x.new_empty(0)
    db = part[0].sum((0, 1)).to(bias.dtype) if bias is not None else x.new_empty(0)
    return [dx, dw, db]


@torch.library.custom_op("mambahome::instance_norm_triton_fwd", mutates_args=())
def instance_norm_fwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float) -> list[Tensor]:
    """[y, mean, rstd]: y in x's dtype and shape, channels-last if x is (`is_channels_last`), else contiguous;
    mean/rstd float32 per (sample, channel)."""
    return _fwd(x, weight, bias, eps)


@instance_norm_fwd.register_fake
def _(x, weight, bias, eps):
    rows = x.shape[0] * x.shape[1]
    stat = torch.empty((rows,), dtype=torch.float32, device=x.device)
    return [_like(x), stat, torch.empty_like(stat)]


@torch.library.custom_op("mambahome::instance_norm_triton_bwd", mutates_args=())
def instance_norm_bwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, rstd: Tensor,
                      dy: Tensor) -> list[Tensor]:
    """[dx, dweight, dbias]: dx in y's layout (x's channels-last, else contiguous; dy in either), dweight/dbias
    empty when absent."""
    return _bwd(x, weight, bias, mean, rstd, dy)


@instance_norm_bwd.register_fake
def _(x, weight, bias, mean, rstd, dy):
    return [_like(x),
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
