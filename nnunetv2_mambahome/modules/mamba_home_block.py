"""The Mamba-HoME block of paper eq. 10: GSC, then per depth a residual Mamba layer and a residual HoME layer."""
from __future__ import annotations

from typing import Optional, Type

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import token_region
from .dyt import DynamicTanh
from .gsc import GatedSpatialConv
from .home import HoME
from .mamba_mixer import MambaMixer


class ResidualMambaLayer(nn.Module):
    """x + Mamba(DyT(x)) on tokens (batch, L, d); DyT's output and Mamba in the token dtype, the sum in x's dtype.

    PyTorch's DyT computes in the token dtype (on x cast to it), the Triton DyT in float32 (`DynamicTanh`)."""

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 scan_backend: Optional[str] = None):
        super().__init__()
        self.norm = DynamicTanh(dim)
        self.mixer = MambaMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand, backend=scan_backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with token_region(x.device) as dtype:
            return x + self.mixer(self.norm(x, out_dtype=dtype))  # the Triton DyT fuses the cast into its store


class ResidualHoMELayer(nn.Module):
    """x + Linear(HoME(DyT(x))) as in paper eq. 10, or x + HoME(DyT(x)) as in the official code.

    `out_linear=True` (default) adds eq. 10's Linear(d, d); the released code has none (its parameter
    count, 170.13M, is 8 such Linears short of the paper's 170.5M). Set False to match the code exactly.
    DyT and HoME's routing run in float32 (HoME amplifies input rounding, see `HoME._forward`), HoME's output
    product and the Linear in the token dtype, the sum in x's dtype.
    """

    def __init__(self, dim: int, group_size: int, num_experts: int, slots_per_expert: int = 4,
                 num_experts_second: Optional[int] = None, expert_mult: float = 2.0, out_linear: bool = True):
        super().__init__()
        self.norm = DynamicTanh(dim)
        self.home = HoME(dim, group_size, num_experts, slots_per_expert, num_experts_second, expert_mult)
        self.out_linear = nn.Linear(dim, dim) if out_linear else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with token_region(x.device) as dtype:
            h = self.home(self.norm(x, out_dtype=torch.float32))
            if isinstance(self.out_linear, nn.Linear):
                bias = self.out_linear.bias
                h = F.linear(h, self.out_linear.weight.to(dtype), None if bias is None else bias.to(dtype))
            return x + h


class MambaHoMEBlock(nn.Module):
    """GSC on the feature map, then `depth` x (Mamba layer, HoME layer) on its raster token sequence.

    Input/output (batch, C, *spatial) for 2D or 3D (via `conv_op`/`norm_op`, used by the GSC). Tokens are
    the feature map flattened with the last spatial axis fastest, as in the reference. The residual stream
    of the token path is float32, its layers compute in the token dtype (`precision`); the output has the
    GSC output's dtype (float16 under nnU-Net's autocast) and the input's layout (standard or channels-last,
    `nets.layout`).
    """

    def __init__(self, channels: int, depth: int, group_size: int, num_experts: int, slots_per_expert: int = 4,
                 num_experts_second: Optional[int] = None, expert_mult: float = 2.0, d_state: int = 16,
                 d_conv: int = 4, expand: int = 2, home_out_linear: bool = True,
                 conv_op: Type[nn.Module] = nn.Conv3d, norm_op: Type[nn.Module] = nn.InstanceNorm3d,
                 norm_op_kwargs: Optional[dict] = None, scan_backend: Optional[str] = None):
        super().__init__()
        if depth < 1:
            raise ValueError(f"MambaHoMEBlock needs depth >= 1, got {depth}")
        self.gsc = GatedSpatialConv(channels, conv_op, norm_op, norm_op_kwargs)
        self.mamba_layers = nn.ModuleList(
            ResidualMambaLayer(channels, d_state, d_conv, expand, scan_backend) for _ in range(depth))
        self.home_layers = nn.ModuleList(
            ResidualHoMELayer(channels, group_size, num_experts, slots_per_expert, num_experts_second,
                              expert_mult, home_out_linear) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gsc(x)
        b, c, *spatial = x.shape
        channels_last = not x.is_contiguous() and x.movedim(1, -1).is_contiguous()
        with token_region(x.device):
            # every token layer works on contiguous (b, L, c) memory: a view of a channels-last map (then only
            # the cast to float32 copies), one transposing copy in and one out of a standard one
            if channels_last:
                t = x.movedim(1, -1).reshape(b, -1, c).to(torch.float32)
            else:
                t = x.reshape(b, c, -1).transpose(1, 2).to(torch.float32, memory_format=torch.contiguous_format)
            for mamba_layer, home_layer in zip(self.mamba_layers, self.home_layers):
                t = home_layer(mamba_layer(t))
            if channels_last:
                return t.to(x.dtype).view(b, *spatial, c).movedim(-1, 1)
            return t.transpose(1, 2).to(x.dtype, memory_format=torch.contiguous_format).view(b, c, *spatial)
