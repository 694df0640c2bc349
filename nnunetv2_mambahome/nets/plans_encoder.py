"""The convolutional encoder an nnU-Net plan describes, with an optional extra module after each stage.

Shared by every plans-driven network of the package (Mamba-HoME and the peer Mamba U-Nets): the stages are
dynamic-network-architectures' `StackedConvBlocks` (default plans, `n_conv_per_stage`) or
`StackedResidualBlocks` after a one-conv stem (ResEnc plans, `n_blocks_per_stage`), exactly as in
`PlainConvUNet` / `ResidualEncoderUNet`, so their parameters match the stock networks one to one. Stage s is
`nn.Sequential(conv_stage)` or `nn.Sequential(conv_stage, extra)` where `stage_extra(s, channels)` returns
the extra module (a Mamba block) or None. The encoder exposes the attributes nnU-Net's `UNetDecoder` reads.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Type, Union

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.helper import maybe_convert_scalar_to_list
from dynamic_network_architectures.building_blocks.residual import StackedResidualBlocks
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from torch import nn

IntOrSeq = Union[int, Sequence[int]]
StageExtra = Callable[[int, int], Optional[nn.Module]]


def per_stage(value: Union[int, Sequence], n_stages: int, name: str) -> list:
    """`value` as one entry per stage; a scalar is repeated."""
    values = [value] * n_stages if isinstance(value, int) else list(value)
    if len(values) != n_stages:
        raise ValueError(f"{name} must have one entry per stage ({n_stages}), got {values}")
    return values


def _no_extra(stage: int, channels: int) -> None:
    return None


class PlansEncoder(nn.Module):
    """Conv stages (plain or residual) of an nnU-Net plan; forward returns every stage's output (the skips)."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: IntOrSeq, conv_op: Type[nn.Module],
                 kernel_sizes: Sequence, strides: Sequence, n_conv_per_stage: Optional[IntOrSeq],
                 n_blocks_per_stage: Optional[IntOrSeq], conv_bias: bool, norm_op: Optional[Type[nn.Module]],
                 norm_op_kwargs: Optional[dict], dropout_op: Optional[Type[nn.Module]],
                 dropout_op_kwargs: Optional[dict], nonlin: Optional[Type[nn.Module]],
                 nonlin_kwargs: Optional[dict], stage_extra: StageExtra = _no_extra):
        super().__init__()
        if (n_conv_per_stage is None) == (n_blocks_per_stage is None):
            raise ValueError("give exactly one of n_conv_per_stage (plain plans) or n_blocks_per_stage (ResEnc plans)")
        features = per_stage(features_per_stage, n_stages, "features_per_stage")
        kernel_sizes = [maybe_convert_scalar_to_list(conv_op, k)
                        for k in per_stage(kernel_sizes, n_stages, "kernel_sizes")]
        strides = [maybe_convert_scalar_to_list(conv_op, s) for s in per_stage(strides, n_stages, "strides")]
        residual = n_blocks_per_stage is not None
        counts = per_stage(n_blocks_per_stage if residual else n_conv_per_stage, n_stages,
                           "n_blocks_per_stage" if residual else "n_conv_per_stage")
        common = dict(conv_bias=conv_bias, norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, dropout_op=dropout_op,
                      dropout_op_kwargs=dropout_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        # ResEnc plans start with a one-conv stem, as dynamic-network-architectures' ResidualEncoder does
        self.stem = StackedConvBlocks(1, conv_op, input_channels, features[0], kernel_sizes[0], 1, **common) \
            if residual else None
        in_ch = features[0] if residual else input_channels
        stages = []
        for s in range(n_stages):
            block_type = StackedResidualBlocks if residual else StackedConvBlocks
            conv = block_type(counts[s], conv_op, in_ch, features[s], kernel_sizes[s], strides[s], **common)
            extra = stage_extra(s, features[s])
            stages.append(nn.Sequential(conv) if extra is None else nn.Sequential(conv, extra))
            in_ch = features[s]
        self.stages = nn.ModuleList(stages)
        # attributes read by UNetDecoder
        self.output_channels, self.strides, self.kernel_sizes = features, strides, kernel_sizes
        self.conv_op, self.conv_bias = conv_op, conv_bias
        self.norm_op, self.norm_op_kwargs = norm_op, norm_op_kwargs
        self.dropout_op, self.dropout_op_kwargs = dropout_op, dropout_op_kwargs
        self.nonlin, self.nonlin_kwargs = nonlin, nonlin_kwargs
        self.return_skips = True

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        if self.stem is not None:
            x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Feature-map elements of the convolutions (nnU-Net's VRAM proxy); extra modules are not counted."""
        total = np.int64(0)
        size = list(input_size)
        if self.stem is not None:
            total += self.stem.compute_conv_feature_map_size(size)
        for stage, stride in zip(self.stages, self.strides):
            total += stage[0].compute_conv_feature_map_size(size)
            size = [i // j for i, j in zip(size, stride)]
        return total
