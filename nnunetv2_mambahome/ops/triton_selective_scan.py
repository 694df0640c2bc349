"""Selective scan in Triton (the `triton` backend): fused, deterministic, no compiled extension needed.

Same semantics and arguments as `selective_scan_ref` (mamba-ssm's `selective_scan_fn` for input-dependent B
and C): y_t = C_t h_t + D u_t with h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, delta = softplus(delta +
delta_bias), the output gated by SiLU(z). Inputs may be float32, float16 or bfloat16 and strided; the state,
the recurrence and every accumulation are float32; the output has u's dtype.

Why our own kernel (mamba-ssm's runs one thread block per (batch, channel), walks L serially in chunks of
2048, re-reads B and C for every channel and sums dB/dC with float atomics, non-deterministically):

- Parallel layout. Programs cover (L-chunk, channel block, batch). A program walks its chunk in tiles of
  BLOCK_T steps; in each tile it loads u/delta/z for BLOCK_D channels once and B_n/C_n once for all of them,
  and runs the recurrence of every state n as `tl.associative_scan` over the tile (pairs (decay, input)).
- Chunks are chained, not serialised: a first pass scans every chunk from a zero state and keeps its end
  state and sum of delta; a short pass chains chunk states (h_start[c+1] = exp(A S_c) h_start[c] + h_end[c]);
  the final pass rescans each chunk from its true start state, writing the output and, for the backward, the
  state at the start of every tile (float32, L/BLOCK_T states per channel: a few % of the activations).
- Backward by recomputation. The adjoint g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1} runs backwards with the
  same three passes (reverse scans); within a tile the states are recomputed from the saved tile-start state.
  a_t h_{t-1} is taken as h_t - delta_t B_t u_t, so no division by decays is ever needed.
- Determinism. dB/dC are reduced over the channels of a program on chip and written once per (channel block,
  step); dA/dD/d(delta_bias) once per (chunk, channel block); the remaining sums over blocks and chunks are
  plain `torch.sum` calls. No atomics: gradients are bit-identical from run to run.
- Fused: delta_bias + softplus on load, the D skip and the SiLU(z) gate in the epilogue (and their
  gradients), and the gated output recomputed in the backward (`out_z`, needed by out_proj's weight gradient)
  so that the mixer saves no (batch, dim, L) activation for the scan.

Registered as `torch.library` custom ops (`mambahome::selective_scan_triton_fwd` / `_bwd`, fake implementations,
autograd; see `scan_ops`), so torch.compile sees one opaque node and CUDA-graph capture works (no host
synchronisation). `selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus)` is the public,
differentiable function.
Runs on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1), which the CPU tests use.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .scan_ops import define_scan_kernel

@triton.jit
def _combine(a1, x1, a2, x2):
    """(a1, x1) then (a2, x2): h -> a2 (a1 h + x1) + x2."""
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _softplus(x):
    """log(1 + exp(x)) with log1p accuracy for small exp(x) (Goldberg's trick), identity above 20 (as torch)."""
    e = tl.exp(x)
    one_e = 1.0 + e
    small = one_e == 1.0
    sp = tl.where(small, e, tl.log(one_e) * (e / tl.where(small, 1.0, one_e - 1.0)))
    return tl.where(x > 20.0, x, sp)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _column(mat, cols, n):
    """mat[:, n] of a (rows, NP) register tile."""
    return tl.sum(tl.where(cols[None, :] == n, mat, 0.0), 1)


@triton.jit
def _program(dim, NP: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's (chunk, channel block, batch) ids, its channels, their mask and the state columns."""
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    return tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64), offs_d, offs_d < dim, tl.arange(0, NP)


@triton.jit
def _channel_vector(ptr, offs_d, mask_d, BLOCK_D: tl.constexpr, PRESENT: tl.constexpr):
    """A per-channel parameter (D, delta_bias) as float32, zeros when the argument is absent."""
    v = tl.zeros((BLOCK_D,), tl.float32)
    if PRESENT:
        v = tl.load(ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    return v


@triton.jit
def _chunk_states(ptr, pid_b, pid_c, n_chunks, dim, offs_d, mask_d, cols, N: tl.constexpr, BLOCK_D: tl.constexpr,
                  NP: tl.constexpr, LOAD: tl.constexpr):
    """Index and mask of this program's (channels x states) block of a (batch, chunks, N, dim) buffer, and the
    block itself (zeros unless LOAD)."""
    idx = ((pid_b * n_chunks + pid_c) * N + cols[None, :]) * dim + offs_d[:, None]
    mask = mask_d[:, None] & (cols[None, :] < N)
    block = tl.zeros((BLOCK_D, NP), tl.float32)
    if LOAD:
        block = tl.load(ptr + idx, mask=mask, other=0.0)
    return idx, mask, block


@triton.jit
def _load_delta(dt_ptr, bias, offs_d, offs_t, mask, s_b, s_d, s_l, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr):
    """The step sizes softplus(delta + bias) (float32, 0 where masked: an identity step) and delta + bias."""
    pre = tl.load(dt_ptr + s_b + offs_d[:, None] * s_d + offs_t[None, :] * s_l, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        pre = pre + bias[:, None]
    dt = pre
    if SOFTPLUS:
        dt = _softplus(pre)
    return tl.where(mask, dt, 0.0), pre


@triton.jit
def _scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, states_ptr, chunk_h_ptr, chunk_s_ptr,
    dim, L, chunk_len, n_chunks, n_tiles,
    s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_Bb, s_Bn, s_Bl, s_Cb, s_Cn, s_Cl, s_zb, s_zd, s_zl, s_ob, s_od, s_ol,
    s_Ad, s_An,
    N: tl.constexpr, NP: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    FINAL: tl.constexpr, LOAD_START: tl.constexpr, SAVE_STATES: tl.constexpr, UNROLL_N: tl.constexpr,
):
    """One chunk x channel block x batch. FINAL=False: scan from zero, store the chunk's end state and sum of
    delta (pass 1). FINAL=True: scan from the chunk's start state (LOAD_START) and write the output (pass 3)."""
    pid_c, pid_d, pid_b, offs_d, mask_d, cols = _program(dim, NP, BLOCK_D)
    bias = _channel_vector(bias_ptr, offs_d, mask_d, BLOCK_D, HAS_BIAS)
    state_idx, state_mask, h = _chunk_states(chunk_h_ptr, pid_b, pid_c, n_chunks, dim, offs_d, mask_d, cols, N,
                                             BLOCK_D, NP, LOAD_START)
    dt_sum = tl.zeros((BLOCK_D,), tl.float32)
    last_step = tl.arange(0, BLOCK_T) == BLOCK_T - 1
    t_start = pid_c * chunk_len
    t_end = tl.minimum(t_start + chunk_len, L)
    for t0 in range(t_start, t_end, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        mask_t = offs_t < t_end
        mask = mask_d[:, None] & mask_t[None, :]
        dt, _ = _load_delta(dt_ptr, bias, offs_d, offs_t, mask, pid_b * s_tb, s_td, s_tl, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_ptr + pid_b * s_ub + offs_d[:, None] * s_ud + offs_t[None, :] * s_ul, mask=mask,
                    other=0.0).to(tl.float32)
        dtu = dt * u
        if FINAL:
            y = tl.zeros((BLOCK_D, BLOCK_T), tl.float32)
        else:
            dt_sum += tl.sum(dt, 1)
        tile = t0 // BLOCK_T
        for n in tl.range(0, N, loop_unroll_factor=UNROLL_N):
            A_n = tl.load(A_ptr + offs_d * s_Ad + n * s_An, mask=mask_d, other=0.0).to(tl.float32)
            B_n = tl.load(B_ptr + pid_b * s_Bb + n * s_Bn + offs_t * s_Bl, mask=mask_t, other=0.0).to(tl.float32)
            a_cum, x_cum = tl.associative_scan((tl.exp(dt * A_n[:, None]), dtu * B_n[None, :]), 1, _combine)
            h_n = _column(h, cols, n)
            if SAVE_STATES:
                tl.store(states_ptr + ((pid_b * n_tiles + tile) * N + n) * dim + offs_d, h_n, mask=mask_d)
            hs = x_cum + a_cum * h_n[:, None]
            if FINAL:
                C_n = tl.load(C_ptr + pid_b * s_Cb + n * s_Cn + offs_t * s_Cl, mask=mask_t,
                              other=0.0).to(tl.float32)
                y += hs * C_n[None, :]
            # masked steps are identities (decay 1, input 0): the last column is the state after t_end - 1
            h = tl.where(cols[None, :] == n, tl.sum(tl.where(last_step[None, :], hs, 0.0), 1)[:, None], h)
        if FINAL:
            if HAS_D:
                y += u * _channel_vector(D_ptr, offs_d, mask_d, BLOCK_D, HAS_D)[:, None]
            if HAS_Z:
                z = tl.load(z_ptr + pid_b * s_zb + offs_d[:, None] * s_zd + offs_t[None, :] * s_zl, mask=mask,
                            other=0.0).to(tl.float32)
                y = y * z * _sigmoid(z)
            tl.store(out_ptr + pid_b * s_ob + offs_d[:, None] * s_od + offs_t[None, :] * s_ol,
                     y.to(out_ptr.dtype.element_ty), mask=mask)
    if not FINAL:
        tl.store(chunk_h_ptr + state_idx, h, mask=state_mask)
        tl.store(chunk_s_ptr + (pid_b * n_chunks + pid_c) * dim + offs_d, dt_sum, mask=mask_d)


@triton.jit
def _chain_kernel(h_ptr, s_ptr, A_ptr, dim, n_chunks, s_Ad, s_An, N: tl.constexpr, BLOCK: tl.constexpr,
                  REVERSE: tl.constexpr):
    """Chunk states in place: h[c] <- carry into chunk c, where carry[c+1] = exp(A S_c) carry[c] + h[c]
    (REVERSE: chunks from the last one backwards). h: (batch, chunks, N, dim), S: (batch, chunks, dim)."""
    pid = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # flattened (n, d)
    mask = offs < N * dim
    n = offs // dim
    d = offs % dim
    A = tl.load(A_ptr + d * s_Ad + n * s_An, mask=mask, other=0.0).to(tl.float32)
    run = tl.zeros((BLOCK,), tl.float32)
    for i in range(n_chunks):
        c = n_chunks - 1 - i if REVERSE else i
        base = (pid_b * n_chunks + c) * N * dim
        local = tl.load(h_ptr + base + offs, mask=mask, other=0.0)
        s = tl.load(s_ptr + (pid_b * n_chunks + c) * dim + d, mask=mask, other=0.0)
        tl.store(h_ptr + base + offs, run, mask=mask)
        run = local + tl.exp(A * s) * run


@triton.jit
def _scan_bwd_local_kernel(
    dt_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, dout_ptr, chunk_g_ptr, chunk_s_ptr,
    dim, L, chunk_len, n_chunks,
    s_tb, s_td, s_tl, s_Cb, s_Cn, s_Cl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl, s_Ad, s_An,
    N: tl.constexpr, NP: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, UNROLL_N: tl.constexpr,
):
    """Backward pass 1: the adjoint at each chunk's first step from a zero adjoint after the chunk, and the
    chunk's sum of delta_{t+1} (its decays as seen by the adjoint)."""
    pid_c, pid_d, pid_b, offs_d, mask_d, cols = _program(dim, NP, BLOCK_D)
    bias = _channel_vector(bias_ptr, offs_d, mask_d, BLOCK_D, HAS_BIAS)
    g = tl.zeros((BLOCK_D, NP), tl.float32)
    shift_sum = tl.zeros((BLOCK_D,), tl.float32)
    first_step = tl.arange(0, BLOCK_T) == 0
    t_start = pid_c * chunk_len
    t_end = tl.minimum(t_start + chunk_len, L)
    n_t = tl.cdiv(t_end - t_start, BLOCK_T)
    for i in range(n_t):
        offs_t = t_start + (n_t - 1 - i) * BLOCK_T + tl.arange(0, BLOCK_T)
        mask = mask_d[:, None] & (offs_t < t_end)[None, :]
        mask_next = mask_d[:, None] & (offs_t + 1 < L)[None, :]
        dt_next, _ = _load_delta(dt_ptr, bias, offs_d, offs_t + 1, mask_next, pid_b * s_tb, s_td, s_tl, HAS_BIAS,
                                 SOFTPLUS)
        dt_next = tl.where(mask, dt_next, 0.0)
        shift_sum += tl.sum(dt_next, 1)
        dy = tl.load(dout_ptr + pid_b * s_gb + offs_d[:, None] * s_gd + offs_t[None, :] * s_gl, mask=mask,
                     other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_ptr + pid_b * s_zb + offs_d[:, None] * s_zd + offs_t[None, :] * s_zl, mask=mask,
                        other=0.0).to(tl.float32)
            dy = dy * z * _sigmoid(z)
        for n in tl.range(0, N, loop_unroll_factor=UNROLL_N):
            A_n = tl.load(A_ptr + offs_d * s_Ad + n * s_An, mask=mask_d, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + pid_b * s_Cb + n * s_Cn + offs_t * s_Cl, mask=offs_t < t_end,
                          other=0.0).to(tl.float32)
            a_cum, g_cum = tl.associative_scan((tl.exp(dt_next * A_n[:, None]), dy * C_n[None, :]), 1, _combine,
                                               reverse=True)
            gs = g_cum + a_cum * _column(g, cols, n)[:, None]
            g = tl.where(cols[None, :] == n, tl.sum(tl.where(first_step[None, :], gs, 0.0), 1)[:, None], g)
    idx, mask, _ = _chunk_states(chunk_g_ptr, pid_b, pid_c, n_chunks, dim, offs_d, mask_d, cols, N, BLOCK_D, NP,
                                 False)
    tl.store(chunk_g_ptr + idx, g, mask=mask)
    tl.store(chunk_s_ptr + (pid_b * n_chunks + pid_c) * dim + offs_d, shift_sum, mask=mask_d)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, states_ptr, chunk_g_ptr,
    du_ptr, ddt_ptr, dz_ptr, outz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    dim, L, chunk_len, n_chunks, n_tiles, n_dblocks,
    s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_Bb, s_Bn, s_Bl, s_Cb, s_Cn, s_Cl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl,
    s_Ad, s_An,
    N: tl.constexpr, NP: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    LOAD_CARRY: tl.constexpr, UNROLL_N: tl.constexpr,
):
    """Backward pass 3: every gradient of one chunk x channel block x batch, tiles from the last to the first.

    du, ddelta, dz and out_z are (batch, dim, L) contiguous; dB/dC partial sums (batch, dim blocks, N, L);
    dA (batch, chunks, N, dim), dD and d(delta_bias) (batch, chunks, dim) partial sums."""
    pid_c, pid_d, pid_b, offs_d, mask_d, cols = _program(dim, NP, BLOCK_D)
    bias = _channel_vector(bias_ptr, offs_d, mask_d, BLOCK_D, HAS_BIAS)
    Dv = _channel_vector(D_ptr, offs_d, mask_d, BLOCK_D, HAS_D)
    chunk_idx, chunk_mask, g = _chunk_states(chunk_g_ptr, pid_b, pid_c, n_chunks, dim, offs_d, mask_d, cols, N,
                                             BLOCK_D, NP, LOAD_CARRY)
    dA_acc = tl.zeros((BLOCK_D, NP), tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), tl.float32)
    first_step = tl.arange(0, BLOCK_T) == 0
    t_start = pid_c * chunk_len
    t_end = tl.minimum(t_start + chunk_len, L)
    n_t = tl.cdiv(t_end - t_start, BLOCK_T)
    for i in range(n_t):
        t0 = t_start + (n_t - 1 - i) * BLOCK_T
        tile = t0 // BLOCK_T
        offs_t = t0 + tl.arange(0, BLOCK_T)
        mask_t = offs_t < t_end
        mask = mask_d[:, None] & mask_t[None, :]
        act = pid_b * s_ub + offs_d[:, None] * s_ud + offs_t[None, :] * s_ul
        u = tl.load(u_ptr + act, mask=mask, other=0.0).to(tl.float32)
        dt, pre = _load_delta(dt_ptr, bias, offs_d, offs_t, mask, pid_b * s_tb, s_td, s_tl, HAS_BIAS, SOFTPLUS)
        mask_next = mask_d[:, None] & (offs_t + 1 < L)[None, :]
        dt_next, _ = _load_delta(dt_ptr, bias, offs_d, offs_t + 1, mask_next, pid_b * s_tb, s_td, s_tl, HAS_BIAS,
                                 SOFTPLUS)
        dt_next = tl.where(mask, dt_next, 0.0)
        dout = tl.load(dout_ptr + pid_b * s_gb + offs_d[:, None] * s_gd + offs_t[None, :] * s_gl, mask=mask,
                       other=0.0).to(tl.float32)
        dy = dout
        if HAS_Z:
            z = tl.load(z_ptr + pid_b * s_zb + offs_d[:, None] * s_zd + offs_t[None, :] * s_zl, mask=mask,
                        other=0.0).to(tl.float32)
            sig_z = _sigmoid(z)
            silu_z = z * sig_z
            dy = dout * silu_z
            y = tl.zeros((BLOCK_D, BLOCK_T), tl.float32)
        dtu = dt * u
        d_dtu = tl.zeros((BLOCK_D, BLOCK_T), tl.float32)
        d_dt = tl.zeros((BLOCK_D, BLOCK_T), tl.float32)
        for n in tl.range(0, N, loop_unroll_factor=UNROLL_N):
            A_n = tl.load(A_ptr + offs_d * s_Ad + n * s_An, mask=mask_d, other=0.0).to(tl.float32)
            B_n = tl.load(B_ptr + pid_b * s_Bb + n * s_Bn + offs_t * s_Bl, mask=mask_t, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + pid_b * s_Cb + n * s_Cn + offs_t * s_Cl, mask=mask_t, other=0.0).to(tl.float32)
            x = dtu * B_n[None, :]
            a_cum, x_cum = tl.associative_scan((tl.exp(dt * A_n[:, None]), x), 1, _combine)
            h0 = tl.load(states_ptr + ((pid_b * n_tiles + tile) * N + n) * dim + offs_d, mask=mask_d, other=0.0)
            hs = x_cum + a_cum * h0[:, None]
            if HAS_Z:
                y += hs * C_n[None, :]
            ga_cum, g_cum = tl.associative_scan((tl.exp(dt_next * A_n[:, None]), dy * C_n[None, :]), 1, _combine,
                                                reverse=True)
            gs = g_cum + ga_cum * _column(g, cols, n)[:, None]
            g = tl.where(cols[None, :] == n, tl.sum(tl.where(first_step[None, :], gs, 0.0), 1)[:, None], g)
            part = (pid_b * n_dblocks + pid_d) * N + n
            tl.store(dC_ptr + part * L + offs_t, tl.sum(dy * hs, 0), mask=mask_t)
            tl.store(dB_ptr + part * L + offs_t, tl.sum(gs * dtu, 0), mask=mask_t)
            d_dtu += gs * B_n[None, :]
            w = gs * (hs - x)  # g_t * a_t * h_{t-1}
            d_dt += w * A_n[:, None]
            dA_acc += tl.where(cols[None, :] == n, tl.sum(w * dt, 1)[:, None], 0.0)
        du = d_dtu * dt
        if HAS_D:
            du += dy * Dv[:, None]
            dD_acc += tl.sum(dy * u, 1)
        d_dt += d_dtu * u
        if SOFTPLUS:
            d_dt = d_dt * _sigmoid(pre)
        d_dt = tl.where(mask, d_dt, 0.0)
        dbias_acc += tl.sum(d_dt, 1)
        out_idx = pid_b * dim * L + offs_d[:, None] * L + offs_t[None, :]
        tl.store(du_ptr + out_idx, du.to(du_ptr.dtype.element_ty), mask=mask)
        tl.store(ddt_ptr + out_idx, d_dt.to(ddt_ptr.dtype.element_ty), mask=mask)
        if HAS_Z:
            y += u * Dv[:, None]
            tl.store(dz_ptr + out_idx, (dout * y * sig_z * (1.0 + z * (1.0 - sig_z))).to(dz_ptr.dtype.element_ty),
                     mask=mask)
            tl.store(outz_ptr + out_idx, (y * silu_z).to(outz_ptr.dtype.element_ty), mask=mask)
    tl.store(dA_ptr + chunk_idx, dA_acc, mask=chunk_mask)
    vec = (pid_b * n_chunks + pid_c) * dim + offs_d
    tl.store(dD_ptr + vec, dD_acc, mask=mask_d)
    tl.store(dbias_ptr + vec, dbias_acc, mask=mask_d)


# ----------------------------------------------------------------------------------------------------------
# host side


# Programs work on tiles of BLOCK_D channels x BLOCK_T steps with `num_warps` warps; the loop over the N states
# is unrolled by `unroll` (0: fully). Forward and backward share BLOCK_T (the forward saves the state at the
# start of every backward tile). Chosen by measurement (tools/gpu/bench_scan_backends.py, docs/BENCHMARKS.md).
# Triton's CPU interpreter (the tests) prefers few, large tiles: its cost is per operation, not per element.
TILES = {  # device type -> (BLOCK_T, {pass: (BLOCK_D, num_warps, unroll)})
    "cuda": (32, {"fwd": (32, 4, 1), "bwd": (32, 4, 1)}),
    "cpu": (512, {"fwd": (16, 1, 1), "bwd": (16, 1, 1)}),
}


class ScanPlan:
    """Tile sizes and the chunking of L for one call; decided from the shapes alone (so it is the same on every
    run: part of what makes gradients reproducible)."""

    def __init__(self, u: torch.Tensor, d_state: int, kind: str):
        batch, dim, length = u.shape
        self.block_t, per_pass = TILES["cuda" if u.device.type == "cuda" else "cpu"]
        block_d, self.num_warps, unroll = per_pass[kind]
        self.unroll = unroll or d_state
        self.block_d = min(block_d, triton.next_power_of_2(dim))
        self.n_dblocks = triton.cdiv(dim, self.block_d)
        self.n_tiles = triton.cdiv(length, self.block_t)
        programs = 4 * _multiprocessors(u.device)  # enough programs to fill the GPU a few times over
        n_chunks = max(1, min(self.n_tiles, triton.cdiv(programs, batch * self.n_dblocks)))
        self.chunk_len = triton.cdiv(self.n_tiles, n_chunks) * self.block_t
        self.n_chunks = triton.cdiv(length, self.chunk_len)
        self.np = triton.next_power_of_2(d_state)


def _multiprocessors(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2  # Triton's interpreter: a few chunks, so that the CPU tests exercise the chunk chaining


def check_scan_inputs(u, delta, A, B, C, D, z, delta_bias) -> None:
    """Shapes and dtypes the Triton scan supports, with a message naming the backend and the fallback."""
    where = "selective scan (triton backend)"
    fallback = "use NNUNETV2_MAMBAHOME_SCAN=torch for other layouts"
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"{where}: u and delta must be (batch, dim, L) of one shape, got {tuple(u.shape)} and "
                         f"{tuple(delta.shape)}")
    b, d, L = u.shape
    if A.dim() != 2 or A.shape[0] != d or A.is_complex():
        raise ValueError(f"{where}: A must be real (dim, d_state) = ({d}, N), got {tuple(A.shape)} {A.dtype}; "
                         f"{fallback}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() != 3 or tuple(t.shape) != (b, n, L):
            raise ValueError(f"{where}: {name} must be input-dependent (batch, d_state, L) = ({b}, {n}, {L}), got "
                             f"{tuple(t.shape)} (grouped or constant B/C are not supported); {fallback}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"{where}: z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (d,):
            raise ValueError(f"{where}: {name} must be ({d},), got {tuple(t.shape)}")
    floats = (torch.float32, torch.float16, torch.bfloat16)
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias)):
        if t is not None and t.dtype not in floats:
            raise ValueError(f"{where}: {name} has dtype {t.dtype}; float32, float16 or bfloat16 only")
        if t is not None and t.device != u.device:
            raise ValueError(f"{where}: {name} is on {t.device}, u on {u.device}")


def _strides3(t: Optional[torch.Tensor], like: torch.Tensor) -> tuple:
    return tuple((t if t is not None else like).stride())


def scan_fwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
             delta_softplus: bool, save_states: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kernels: (output in u's dtype, tile-start states for the backward or an empty tensor)."""
    b, d, L = u.shape
    n = A.shape[1]
    out = torch.empty((b, d, L), dtype=u.dtype, device=u.device)
    p = ScanPlan(u, n, "fwd")
    f32 = dict(dtype=torch.float32, device=u.device)
    states = torch.empty((b, p.n_tiles, n, d), **f32) if save_states else torch.empty(0, **f32)
    if out.numel() == 0:
        return out, states
    chunk_h = torch.empty((b, p.n_chunks, n, d), **f32)
    chunk_s = torch.empty((b, p.n_chunks, d), **f32)
    grid = (p.n_chunks, p.n_dblocks, b)
    common = (d, L, p.chunk_len, p.n_chunks, p.n_tiles, *u.stride(), *delta.stride(), *B.stride(), *C.stride(),
              *_strides3(z, u), *out.stride(), *A.stride())
    flags = dict(N=n, NP=p.np, BLOCK_D=p.block_d, BLOCK_T=p.block_t, HAS_D=D is not None, HAS_Z=z is not None,
                 HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), UNROLL_N=p.unroll,
                 num_warps=p.num_warps)
    args = (u, delta, A, B, C, D if D is not None else u, z if z is not None else u,
            delta_bias if delta_bias is not None else u, out, states if save_states else chunk_s, chunk_h, chunk_s)
    if p.n_chunks > 1:
        _scan_fwd_kernel[grid](*args, *common, FINAL=False, LOAD_START=False, SAVE_STATES=False, **flags)
        _chain(chunk_h, chunk_s, A, reverse=False)
    _scan_fwd_kernel[grid](*args, *common, FINAL=True, LOAD_START=p.n_chunks > 1, SAVE_STATES=save_states, **flags)
    return out, states


def _chain(h: torch.Tensor, s: torch.Tensor, A: torch.Tensor, reverse: bool) -> None:
    b, n_chunks, n, d = h.shape
    block = min(1024, triton.next_power_of_2(n * d))
    _chain_kernel[(triton.cdiv(n * d, block), b)](h, s, A, d, n_chunks, *A.stride(), N=n, BLOCK=block,
                                                  REVERSE=reverse)


def scan_bwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
             delta_softplus: bool, dout: torch.Tensor, states: torch.Tensor) -> tuple:
    """Backward kernels: (du, ddelta, dA, dB, dC, dD, ddelta_bias, dz, out_z), None for absent inputs.

    out_z (the gated output, recomputed) is returned when z is given, for callers that need it (out_proj)."""
    b, d, L = u.shape
    n = A.shape[1]
    p = ScanPlan(u, n, "bwd")
    f32 = dict(dtype=torch.float32, device=u.device)
    du = torch.empty((b, d, L), dtype=u.dtype, device=u.device)
    ddelta = torch.empty((b, d, L), dtype=delta.dtype, device=u.device)
    dz = torch.empty((b, d, L), dtype=z.dtype, device=u.device) if z is not None else None
    out_z = torch.empty((b, d, L), dtype=u.dtype, device=u.device) if z is not None else None
    dB = torch.empty((b, p.n_dblocks, n, L), **f32)
    dC = torch.empty((b, p.n_dblocks, n, L), **f32)
    dA = torch.empty((b, p.n_chunks, n, d), **f32)
    dD = torch.empty((b, p.n_chunks, d), **f32)
    dbias = torch.empty((b, p.n_chunks, d), **f32)
    dout = dout.contiguous() if dout.stride(-1) != 1 else dout
    grid = (p.n_chunks, p.n_dblocks, b)
    flags = dict(N=n, NP=p.np, BLOCK_D=p.block_d, BLOCK_T=p.block_t, HAS_Z=z is not None,
                 HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), UNROLL_N=p.unroll,
                 num_warps=p.num_warps)
    zz = z if z is not None else u
    bias = delta_bias if delta_bias is not None else u
    chunk_g = torch.empty((b, p.n_chunks, n, d), **f32)
    if p.n_chunks > 1:
        chunk_s = torch.empty((b, p.n_chunks, d), **f32)
        _scan_bwd_local_kernel[grid](delta, A, C, zz, bias, dout, chunk_g, chunk_s, d, L, p.chunk_len, p.n_chunks,
                                     *delta.stride(), *C.stride(), *zz.stride(), *dout.stride(), *A.stride(), **flags)
        _chain(chunk_g, chunk_s, A, reverse=True)
    _scan_bwd_kernel[grid](
        u, delta, A, B, C, D if D is not None else u, zz, bias, dout, states, chunk_g,
        du, ddelta, dz if dz is not None else du, out_z if out_z is not None else du, dB, dC, dA, dD, dbias,
        d, L, p.chunk_len, p.n_chunks, p.n_tiles, p.n_dblocks,
        *u.stride(), *delta.stride(), *B.stride(), *C.stride(), *zz.stride(), *dout.stride(), *A.stride(),
        HAS_D=D is not None, LOAD_CARRY=p.n_chunks > 1, **flags)
    return (du, ddelta, dA.sum((0, 1)).t().to(A.dtype), dB.sum(1).to(B.dtype), dC.sum(1).to(C.dtype),
            dD.sum((0, 1)).to(D.dtype) if D is not None else None,
            dbias.sum((0, 1)).to(delta_bias.dtype) if delta_bias is not None else None, dz, out_z)


def _fake_states(u: torch.Tensor, A: torch.Tensor, z: Optional[torch.Tensor], save: bool) -> list[torch.Tensor]:
    b, d, L = u.shape
    block_t = TILES["cuda" if u.device.type == "cuda" else "cpu"][0]
    shape = (b, triton.cdiv(L, block_t), A.shape[1], d) if save else (0,)
    return [torch.empty(shape, dtype=torch.float32, device=u.device)]


def _fwd_impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save):
    out, states = scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save)
    return out, [states]


def _bwd_impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, saved):
    return scan_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, saved[0])


selective_scan_triton = define_scan_kernel("triton", _fwd_impl, _bwd_impl, _fake_states, check_scan_inputs)
