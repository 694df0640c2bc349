"""Token layers of the peer Mamba U-Nets (U-Mamba, Taming Mambas, SegMamba), all over the stock `MambaMixer`.

A feature map (B, C, *S) becomes a raster token sequence (B, L, C), last spatial axis fastest, as in every
reference. Scan variants are plain reorderings of that sequence around the stock mixer: a flip for the
backward direction, a permutation of the spatial axes for another axis order, no patched kernel. 2D or 3D
(MultiAxis's default axis orders are 3D).

Precision is Mamba-HoME's policy (`precision`): inside `TokenLayer` autocast is off, the residual stream
between token layers is float32, and each Mamba sub-layer computes its pre-norm and mixer in the token dtype
(bfloat16 under autocast where the device has it, else float32), like `ResidualMambaLayer`; Taming Mambas'
LN + Linear sub-layer likewise. The network's `force_fp32` (the _noAMP trainers) makes all of it float32.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import token_region
from .mamba_mixer import MambaMixer

AxisOrder = tuple[int, ...]
# Taming Mambas' MultiSegMamba keeps permutations 0, 1, 2 and 4 of itertools.permutations((H, W, D)).
MULTI_AXIS_ORDERS_3D: tuple[AxisOrder, ...] = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (2, 0, 1))


def reorder(t: torch.Tensor, spatial: Sequence[int], order: AxisOrder) -> torch.Tensor:
    """Raster tokens (B, L, C) -> tokens scanned with the spatial axes in `order` (slowest first)."""
    b, _, c = t.shape
    grid = t.reshape(b, *spatial, c).permute(0, *(a + 1 for a in order), len(spatial) + 1)
    return grid.reshape(b, -1, c)


def restore(t: torch.Tensor, spatial: Sequence[int], order: AxisOrder) -> torch.Tensor:
    """Inverse of `reorder`."""
    b, _, c = t.shape
    inverse = sorted(range(len(order)), key=lambda i: order[i])
    grid = t.reshape(b, *(spatial[a] for a in order), c).permute(0, *(i + 1 for i in inverse), len(spatial) + 1)
    return grid.reshape(b, -1, c)


class SpatialTokenModule(nn.Module):
    """Marker: a token module whose forward also takes the feature map's spatial shape, forward(t, spatial)."""


class MambaLayer(nn.Module):
    """Mamba(LN(x)) on tokens, plus x when `residual` (U-Mamba's layer has none); LN and Mamba in the token
    dtype, the output float32."""

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, residual: bool = False,
                 scan_backend: Optional[str] = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = MambaMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand, backend=scan_backend)
        self.residual = residual

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        with token_region(t.device) as dtype:
            out = self.mixer(self.norm(t.to(dtype))).float()
            return t + out if self.residual else out


class MambaTrans(nn.Module):
    """Taming Mambas' Mamba layer: x + Mamba(LN(x)), then x + Linear(LN(x)); d_state = min(dim, d_state_max).

    LN, Mamba and Linear in the token dtype, the two sums in x's dtype (the float32 residual stream).
    """

    def __init__(self, dim: int, d_state_max: int = 256, scan_backend: Optional[str] = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = MambaMixer(dim, d_state=min(dim, d_state_max), d_conv=4, expand=2, backend=scan_backend)
        self.norm2 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        with token_region(t.device) as dtype:
            t = t + self.mixer(self.norm1(t.to(dtype)))
            bias = None if self.head.bias is None else self.head.bias.to(dtype)
            return t + F.linear(self.norm2(t.to(dtype)), self.head.weight.to(dtype), bias)


class Bidirectional(nn.Module):
    """LN(fwd(x) + flip(bwd(flip(x)))) with two independent copies of a token layer (Taming Mambas' BiSegMamba)."""

    def __init__(self, make_layer: Callable[[], nn.Module], dim: int):
        super().__init__()
        self.forward_layer = make_layer()
        self.backward_layer = make_layer()
        self.norm = nn.LayerNorm(dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.norm(self.forward_layer(t) + self.backward_layer(t.flip(1)).flip(1))


class MultiAxis(SpatialTokenModule):
    """Mean over axis orders of branch_k(tokens scanned in order k) (Taming Mambas' MultiSegMamba).

    With `Bidirectional` branches and the 4 orders of `MULTI_AXIS_ORDERS_3D` this is 4 orders x 2
    directions = 8 Mamba scans per layer, as in the paper.
    """

    def __init__(self, make_branch: Callable[[], nn.Module], orders: Sequence[AxisOrder] = MULTI_AXIS_ORDERS_3D):
        super().__init__()
        self.orders = [tuple(o) for o in orders]
        self.branches = nn.ModuleList(make_branch() for _ in self.orders)

    def forward(self, t: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
        if len(spatial) != len(self.orders[0]):
            raise ValueError(f"axis orders {self.orders} do not fit a {len(spatial)}D feature map")
        outs = [restore(branch(reorder(t, spatial, order)), spatial, order)
                for order, branch in zip(self.orders, self.branches)]
        return torch.stack(outs, 0).mean(0)


class TriOrientedMambaLayer(SpatialTokenModule):
    """SegMamba's ToM layer on three stock mixers: x + sum of forward, backward and inter-slice Mamba(LN(x)).

    SegMamba's inter-slice scan splits the L raster tokens into `nslices` chunks and interleaves them. With
    nslices = the extent of the first spatial axis (the reference's hard-coded 64/32/16/8 are exactly that
    for 128^3 inputs) this is the raster scan with the first axis fastest, so here nslices follows the
    feature map and always divides L. The reference shares in_proj/out_proj across the three directions
    (patched mamba-ssm, bimamba_type="v3"); here each direction is a full stock mixer.
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 scan_backend: Optional[str] = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.forward_mixer, self.backward_mixer, self.slice_mixer = (
            MambaMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand, backend=scan_backend) for _ in range(3))

    def forward(self, t: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
        with token_region(t.device) as dtype:
            h = self.norm(t.to(dtype))
            inter_slice: AxisOrder = (*range(1, len(spatial)), 0)
            # summed onto the float32 stream one by one, left to right
            return (t + self.forward_mixer(h) + self.backward_mixer(h.flip(1)).flip(1)
                    + restore(self.slice_mixer(reorder(h, spatial, inter_slice)), spatial, inter_slice))


class TokenLayer(nn.Module):
    """Feature map -> raster tokens -> the token layers in turn -> feature map, autocast off inside.

    The token stream is float32 (each layer computes in the token dtype, see the module docstring); the output
    has the input's dtype (float16 under nnU-Net's autocast), as `MambaHoMEBlock`'s.
    """

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        with token_region(x.device):
            t = x.reshape(b, c, -1).transpose(1, 2).float()
            for layer in self.layers:
                t = layer(t, spatial) if isinstance(layer, SpatialTokenModule) else layer(t)
            return t.transpose(1, 2).reshape(b, c, *spatial).to(x.dtype)
