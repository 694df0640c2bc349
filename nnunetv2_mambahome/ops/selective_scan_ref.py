"""Readable selective scan: a step-by-step loop with the exact semantics of mamba-ssm's `selective_scan_ref`.

Used as the ground truth in tests. It materialises one (B, D, N) state per step and keeps every step in
autograd's graph, so it is only meant for short sequences.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """y_t = C_t h_t + D u_t with h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, gated by SiLU(z).

    Shapes: u, delta, z (batch, dim, L); A (dim, N); B, C (batch, N, L); D, delta_bias (dim,).
    Computed in float32, returned in u's dtype.
    """
    dtype_in = u.dtype
    u, delta = u.float(), scan_delta(delta, delta_bias, delta_softplus)
    A, B, C = A.float(), B.float(), C.float()
    h = u.new_zeros(u.shape[0], A.shape[0], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    return scan_output(torch.stack(ys, dim=2), u, D, z, dtype_in)


def scan_delta(delta: torch.Tensor, delta_bias: Optional[torch.Tensor], delta_softplus: bool) -> torch.Tensor:
    """The step sizes the recurrence uses: softplus(delta + bias) in float32 (shared by every backend)."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    return F.softplus(delta) if delta_softplus else delta


def scan_output(y: torch.Tensor, u: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                dtype: torch.dtype) -> torch.Tensor:
    """Add the D*u skip and the SiLU(z) gate to the scan's C.h term (shared by every backend)."""
    out = y if D is None else y + u * D.float()[:, None]
    if z is not None:
        out = out * F.silu(z.float())
    return out.to(dtype)
