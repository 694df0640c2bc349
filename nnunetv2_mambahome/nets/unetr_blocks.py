"""The MONAI 1.3.2 blocks the official Mamba-HoME decoder uses (3D, instance norm, residual), without MONAI.

Attribute names follow MONAI (`conv1.conv`, `norm1`, `layer`, `transp_conv.conv`, `conv_block`, `conv.conv`)
so official state_dict keys load unchanged. Semantics as MONAI's `dynunet_block`/`unetr_block` with
`norm_name="instance"`, `res_block=True`: bias-free convolutions, InstanceNorm3d without affine,
LeakyReLU(0.01, inplace).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def _conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = False) -> nn.Sequential:
    """MONAI's `Convolution` without act/norm/dropout: a Sequential holding one `conv` (same padding, stride 1)."""
    return nn.Sequential(OrderedDict(conv=nn.Conv3d(in_channels, out_channels, kernel_size, 1,
                                                    (kernel_size - 1) // 2, bias=bias)))


class UnetResBlock(nn.Module):
    """lrelu(IN(conv3(IN(lrelu(IN(conv3(x))))) + shortcut(x)); shortcut = IN(conv1x1(x)) if in != out, else x.

    Stride 1 only (the only use in Mamba-HoME), so the 1x1 shortcut exists exactly when channels change.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels, kernel_size)
        self.conv2 = _conv(out_channels, out_channels, kernel_size)
        self.lrelu = nn.LeakyReLU(0.01, inplace=True)
        self.norm1 = nn.InstanceNorm3d(out_channels)
        self.norm2 = nn.InstanceNorm3d(out_channels)
        if in_channels != out_channels:
            self.conv3 = _conv(in_channels, out_channels, 1)
            self.norm3 = nn.InstanceNorm3d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.lrelu(self.norm1(self.conv1(x)))))
        residual = self.norm3(self.conv3(x)) if hasattr(self, "conv3") else x
        return self.lrelu(out + residual)


class UnetrBasicBlock(nn.Module):
    """MONAI's `UnetrBasicBlock(res_block=True)`: a `UnetResBlock` stored as `.layer`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.layer = UnetResBlock(in_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class UnetrUpBlock(nn.Module):
    """x2 upsampling by a bias-free ConvTranspose3d(k2, s2), concat [up, skip], then UnetResBlock(2*out -> out)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.transp_conv = nn.Sequential(OrderedDict(
            conv=nn.ConvTranspose3d(in_channels, out_channels, 2, 2, bias=False)))
        self.conv_block = UnetResBlock(2 * out_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat((self.transp_conv(x), skip), dim=1))


class UnetOutBlock(nn.Module):
    """1x1x1 Conv3d with bias producing the logits."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = _conv(in_channels, out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
