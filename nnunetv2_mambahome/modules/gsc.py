"""Gated Spatial Convolution (GSC) from SegMamba, as used by Mamba-HoME before each stage's token layers."""
from __future__ import annotations

from typing import Optional, Type

import torch
from torch import nn

from .cancelled_bias import skip_cancelled_bias


class GatedSpatialConv(nn.Module):
    """y = ReLU(N(proj4(b1 + b2))) + x, with b1 = ReLU(N(proj2(ReLU(N(proj(x)))))) (3^k convs) and
    b2 = ReLU(N(proj3(x))) (1^k conv).

    The branches are *added*, as in the official code (the SegMamba paper describes a product). Works for
    2D or 3D through `conv_op`/`norm_op`; the default norm is the reference's InstanceNorm without affine.
    Every conv feeds a norm directly: with an InstanceNorm its bias is kept but not applied (`cancelled_bias`).
    """

    def __init__(self, channels: int, conv_op: Type[nn.Module] = nn.Conv3d,
                 norm_op: Type[nn.Module] = nn.InstanceNorm3d, norm_op_kwargs: Optional[dict] = None):
        super().__init__()
        kw = norm_op_kwargs or {}
        self.proj = conv_op(channels, channels, 3, 1, 1)
        self.norm = norm_op(channels, **kw)
        self.proj2 = conv_op(channels, channels, 3, 1, 1)
        self.norm2 = norm_op(channels, **kw)
        self.proj3 = conv_op(channels, channels, 1, 1, 0)
        self.norm3 = norm_op(channels, **kw)
        self.proj4 = conv_op(channels, channels, 1, 1, 0)
        self.norm4 = norm_op(channels, **kw)
        self.act = nn.ReLU()
        for conv, norm in ((self.proj, self.norm), (self.proj2, self.norm2), (self.proj3, self.norm3),
                           (self.proj4, self.norm4)):
            skip_cancelled_bias(conv, norm)  # each norm cancels its conv's bias (`cancelled_bias`)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.act(self.norm2(self.proj2(self.act(self.norm(self.proj(x))))))
        b2 = self.act(self.norm3(self.proj3(x)))
        return self.act(self.norm4(self.proj4(b1 + b2))) + x
