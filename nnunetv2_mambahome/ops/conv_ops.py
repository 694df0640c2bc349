"""Causal depthwise conv1d + SiLU kernels as `torch.library` custom ops, one definition for every backend.

Each compiled conv (our Triton kernel, causal-conv1d's CUDA kernel) is registered as
`mambahome::causal_conv1d_<backend>_fwd` / `_bwd` with fake implementations and autograd, like the scans
(`scan_ops`): torch.compile then sees one opaque node of known shape (causal-conv1d's own ops write into an
`out=` tensor, which Dynamo refuses: a graph break per mixer), and every output is a fresh contiguous tensor,
as the fakes say. `ConvKernel` is what the fused mixer body takes (`mamba_inner`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .scan_ops import LIBRARY


@dataclass(frozen=True)
class ConvKernel:
    """A causal depthwise conv1d + SiLU: fwd(x (batch, dim, L), w (dim, W), b) -> out (differentiable),
    bwd(x, w, b, dout) -> (dx, dw, db), db None without bias."""

    name: str
    fwd: Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]
    bwd: Callable[[Tensor, Tensor, Optional[Tensor], Tensor], tuple]


def define_conv_kernel(name: str, backend: str, fwd_impl: Callable[[Tensor, Tensor, Optional[Tensor]], Tensor],
                       bwd_impl: Callable[[Tensor, Tensor, Optional[Tensor], Tensor], tuple]) -> ConvKernel:
    """Register `mambahome::causal_conv1d_<backend>_fwd` / `_bwd` (+ fakes, + autograd) around the
    implementations: fwd_impl(x, w, b) -> out; bwd_impl(x, w, b, dout) -> (dx, dw, db or None)."""
    op = f"{LIBRARY}::causal_conv1d_{backend}"

    @torch.library.custom_op(f"{op}_fwd", mutates_args=())
    def fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return fwd_impl(x, weight, bias).contiguous()

    @fwd.register_fake
    def _(x, weight, bias):
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)

    @torch.library.custom_op(f"{op}_bwd", mutates_args=())
    def bwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], dout: Tensor) -> list[Tensor]:
        dx, dw, db = bwd_impl(x, weight, bias, dout)
        return [dx.contiguous(), dw, db if db is not None else x.new_empty(0)]

    @bwd.register_fake
    def _(x, weight, bias, dout):
        return [torch.empty(x.shape, dtype=x.dtype, device=x.device), torch.empty_like(weight),
                torch.empty_like(bias) if bias is not None else x.new_empty(0)]

    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight, bias)

    def backward_pass(x, weight, bias, dout) -> tuple:
        dx, dw, db = bwd(x, weight, bias, dout)
        return dx, dw, db if bias is not None else None

    fwd.register_autograd(lambda ctx, dout: backward_pass(*ctx.saved_tensors, dout), setup_context=setup_context)
    return ConvKernel(name, fwd, backward_pass)
