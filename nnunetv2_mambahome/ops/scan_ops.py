"""Selective-scan kernels as `torch.library` custom ops, with fake (meta) implementations and autograd.

Every compiled scan (the Triton kernels, mamba-ssm's `selective_scan_cuda`) is registered as two ops,
`mambahome::selective_scan_<backend>_fwd` and `..._bwd`, so that torch.compile sees one opaque node of known
shape per call (no graph break, nothing traced inside) and CUDA-graph capture replays them like any op. The
forward returns [out, *saved] (what the backward needs besides the inputs); the backward returns the gradients
of (u, delta, A, B, C, D, delta_bias, z) and the recomputed gated output out_z, absent ones as empty tensors
(custom ops cannot return None). `ScanKernel` wraps a pair with registered autograd into the public function
with `selective_scan_ref`'s signature; the fused mixer calls the two ops directly (`mamba_inner`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

LIBRARY = "mambahome"
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias", "z", "out_z")

FwdImpl = Callable[..., tuple[Tensor, Sequence[Tensor]]]
BwdImpl = Callable[..., Sequence[Optional[Tensor]]]
FakeSaved = Callable[[Tensor, Tensor, Optional[Tensor], bool], list[Tensor]]


def _none_if_empty(t: Tensor) -> Optional[Tensor]:
    return None if t.numel() == 0 and t.dim() == 1 else t


@dataclass(frozen=True)
class ScanKernel:
    """A backend's selective scan: `fwd`/`bwd` custom ops and `__call__` with autograd (selective_scan_ref's
    signature: u, delta, z (batch, dim, L); A (dim, N); B, C (batch, N, L); D, delta_bias (dim,))."""

    name: str
    fwd: Callable[..., list[Tensor]]
    bwd: Callable[..., list[Tensor]]
    check: Callable[..., None]

    def forward(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool,
                save: bool) -> tuple[Tensor, list[Tensor]]:
        """(output, saved tensors for `backward`)."""
        out, *saved = self.fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save)
        return out, saved

    def backward(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, dout: Tensor,
                 saved: Sequence[Tensor]) -> list[Optional[Tensor]]:
        """Gradients of (u, delta, A, B, C, D, delta_bias, z) and the recomputed out_z; None where absent."""
        return [_none_if_empty(g) for g in self.bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout,
                                                     list(saved))]

    def __call__(self, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
                 z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None,
                 delta_softplus: bool = False) -> Tensor:
        self.check(u, delta, A, B, C, D, z, delta_bias)
        save = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
        return self.fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save)[0]


def define_scan_kernel(name: str, fwd_impl: FwdImpl, bwd_impl: BwdImpl, fake_saved: FakeSaved,
                       check: Callable[..., None]) -> ScanKernel:
    """Register `mambahome::selective_scan_<name>_fwd` / `_bwd` (+ fake, + autograd) around the implementations.

    fwd_impl(u, delta, A, B, C, D, z, delta_bias, softplus, save) -> (out, saved tensors);
    bwd_impl(u, delta, A, B, C, D, z, delta_bias, softplus, dout, saved) -> (du, ddelta, dA, dB, dC, dD,
    ddelta_bias, dz, out_z) with None for absent ones; fake_saved(u, A, z, save) -> empty tensors shaped like
    the saved ones. All outputs are fresh, contiguous tensors.
    """
    op = f"{LIBRARY}::selective_scan_{name}"

    @torch.library.custom_op(f"{op}_fwd", mutates_args=())
    def fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
            delta_bias: Optional[Tensor], delta_softplus: bool, save: bool) -> list[Tensor]:
        out, saved = fwd_impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save)
        # contiguous, as the fake says: mamba-ssm lays the gated output out like z, a strided view of xz, and
        # torch.compile's generated code asserts the fake's strides (no-op copies where already contiguous)
        return [t.contiguous() for t in (out, *saved)]

    @fwd.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save):
        return [torch.empty(u.shape, dtype=u.dtype, device=u.device), *fake_saved(u, A, z, save)]

    @torch.library.custom_op(f"{op}_bwd", mutates_args=())
    def bwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
            delta_bias: Optional[Tensor], delta_softplus: bool, dout: Tensor, saved: list[Tensor]) -> list[Tensor]:
        grads = bwd_impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, saved)
        return [g.contiguous() if g is not None else u.new_empty(0) for g in grads]

    @bwd.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, saved):
        like = (u, delta, A, B, C, D, delta_bias, z, u if z is not None else None)
        return [torch.empty(t.shape, dtype=t.dtype, device=t.device) if t is not None else u.new_empty(0)
                for t in like]

    def setup_context(ctx, inputs, output):
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, save = inputs
        if not save:
            ctx.unsaved = True
        ctx.delta_softplus = delta_softplus
        ctx.n_saved = len(output) - 1
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, *output[1:])

    def backward(ctx, grads_out):
        if getattr(ctx, "unsaved", False):
            raise RuntimeError(f"{op}_fwd ran with save=False: call it with save=True to differentiate it")
        u, delta, A, B, C, D, z, delta_bias, *saved = ctx.saved_tensors
        g = [_none_if_empty(t) for t in bwd(u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus,
                                             grads_out[0], saved)]
        du, ddelta, dA, dB, dC, dD, ddelta_bias, dz, _ = g
        return du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, None, None

    fwd.register_autograd(backward, setup_context=setup_context)
    return ScanKernel(name, fwd, bwd, check)
