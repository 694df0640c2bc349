"""The convolutional encoder an nnU-Net plan describes, and the reading of that plan.

`PlansEncoder` is shared by every plans-driven network of the package (Mamba-HoME and the peer Mamba U-Nets):
the stages are dynamic-network-architectures' `StackedConvBlocks` (default plans, `n_conv_per_stage`) or
`StackedResidualBlocks` after a one-conv stem (ResEnc plans, `n_blocks_per_stage`), exactly as in
`PlainConvUNet` / `ResidualEncoderUNet`, so their parameters match the stock networks one to one. Stage s is
`nn.Sequential(conv_stage)` or `nn.Sequential(conv_stage, layer)` where `stage_layer(s, channels)` returns
the network's extra module (a Mamba block) or None. The encoder exposes the attributes nnU-Net's
`UNetDecoder` reads.

Reading the plans: `conv_plan_kwargs` splits a plans architecture entry into the encoder/decoder keyword
arguments and the network's own settings, `check_configuration` checks a configuration's patch against the
network; plans a network cannot serve raise `PlansNotSupportedError` before any training starts.
"""
from __future__ import annotations

import pydoc
from typing import Any, Callable, List, Mapping, Optional, Sequence, Type, Union

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim, maybe_convert_scalar_to_list
from dynamic_network_architectures.building_blocks.residual import StackedResidualBlocks
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from torch import nn

from ..modules.instance_norm import instance_norm_op

IntOrSeq = Union[int, Sequence[int]]
StageLayer = Callable[[int, int], Optional[nn.Module]]

# the stock architectures whose plans our networks take (nnU-Net default and ResEnc plans)
STOCK_ARCHITECTURES = ("PlainConvUNet", "ResidualEncoderUNet")
# arch_kwargs keys that describe the conv encoder and decoder; the plans' other keys are the network's own
CONV_PLAN_KEYS = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage",
                  "n_blocks_per_stage", "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs",
                  "dropout_op", "dropout_op_kwargs", "nonlin", "nonlin_kwargs")


class PlansNotSupportedError(ValueError):
    """The nnU-Net plans describe something the network cannot be built from."""


def per_stage(value: Union[int, Sequence], n_stages: int, name: str) -> list:
    """`value` as one entry per stage; a scalar is repeated."""
    values = [value] * n_stages if isinstance(value, int) else list(value)
    if len(values) != n_stages:
        raise ValueError(f"{name} must have one entry per stage ({n_stages}), got {values}")
    return values


def instance_norm_for(conv_op: Type[nn.Module]) -> Type[nn.Module]:
    """InstanceNorm of conv_op's dimensionality (the GSC's norm, as in the reference; `instance_norm_op` decides
    PyTorch's or the Triton one)."""
    return instance_norm_op({1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[
        convert_conv_op_to_dim(conv_op)])


def _no_layer(stage: int, channels: int) -> None:
    return None


class PlansEncoder(nn.Module):
    """Conv stages (plain or residual) of an nnU-Net plan; forward returns every stage's output (the skips)."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: IntOrSeq, conv_op: Type[nn.Module],
                 kernel_sizes: Sequence, strides: Sequence, n_conv_per_stage: Optional[IntOrSeq],
                 n_blocks_per_stage: Optional[IntOrSeq], conv_bias: bool, norm_op: Optional[Type[nn.Module]],
                 norm_op_kwargs: Optional[dict], dropout_op: Optional[Type[nn.Module]],
                 dropout_op_kwargs: Optional[dict], nonlin: Optional[Type[nn.Module]],
                 nonlin_kwargs: Optional[dict], stage_layer: StageLayer = _no_layer):
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
            layer = stage_layer(s, features[s])
            stages.append(nn.Sequential(conv) if layer is None else nn.Sequential(conv, layer))
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
        """Feature-map elements of the convolutions (nnU-Net's VRAM proxy); stage layers are not counted."""
        total = np.int64(0)
        size = list(input_size)
        if self.stem is not None:
            total += self.stem.compute_conv_feature_map_size(size)
        for stage, stride in zip(self.stages, self.strides):
            total += stage[0].compute_conv_feature_map_size(size)
            size = [i // j for i, j in zip(size, stride)]
        return total


def _check_stock_extras(kwargs: dict) -> None:
    """ResEnc plans' optional keys: only their defaults (BasicBlockD, no bottleneck or stem width) are served."""
    if kwargs.pop("nonlin_first", False):
        raise PlansNotSupportedError("plans with nonlin_first=True are not supported")
    block = kwargs.pop("block", None)
    if block is not None and getattr(block, "__name__", str(block)).rsplit(".", 1)[-1] != "BasicBlockD":
        raise PlansNotSupportedError(f"ResEnc plans with block={block} are not supported (BasicBlockD only)")
    for key in ("bottleneck_channels", "stem_channels"):
        if kwargs.pop(key, None) not in (None, kwargs.get("features_per_stage", [None])[0]):
            raise PlansNotSupportedError(f"plans key {key} is not supported")


def conv_plan_kwargs(arch_class_name: str, arch_kwargs: Mapping[str, Any], req_import: Sequence[str],
                     network: str, own_keys: Sequence[str] = ()) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """Split a plans architecture entry into (conv kwargs with imports resolved, the network's own settings).

    Stock plans (`STOCK_ARCHITECTURES`) give the conv part only; the settings are then None (the plans say
    nothing about the network). Plans naming `network` itself are what nnU-Net's `get_network_from_plans`
    passes to its constructor: conv keys plus `own_keys` (returned as the settings). Any other key, or any
    other architecture, raises PlansNotSupportedError: no key is accepted and then ignored.
    """
    short = arch_class_name.rsplit(".", 1)[-1]
    names_network = short == network
    if short not in STOCK_ARCHITECTURES and not names_network:
        raise PlansNotSupportedError(f"plans architecture {arch_class_name!r} is not supported by {network}; supported: "
                                     f"{STOCK_ARCHITECTURES} (nnU-Net default or ResEnc plans) or {network} plans")
    kwargs = dict(arch_kwargs)
    for key in req_import:
        if kwargs.get(key) is not None and isinstance(kwargs[key], str):
            located = pydoc.locate(kwargs[key])
            if located is None:
                raise PlansNotSupportedError(f"cannot import {kwargs[key]!r} named by plans key {key!r}")
            kwargs[key] = located
    if "deep_supervision" in kwargs:
        raise PlansNotSupportedError("plans arch_kwargs must not set deep_supervision: the trainer decides it (nnU-Net "
                                     "passes enable_deep_supervision, overriding the plans); remove the key")
    if not names_network:
        _check_stock_extras(kwargs)
    settings = {key: kwargs.pop(key) for key in own_keys if key in kwargs} if names_network else None
    unknown = sorted(set(kwargs) - set(CONV_PLAN_KEYS))
    if unknown:
        hint = (f" ({network} settings belong in plans naming {network}: nnunetv2-mambahome write-plans)"
                if set(unknown) & set(own_keys) else "")
        raise PlansNotSupportedError(f"unsupported plans arch_kwargs {unknown} for {arch_class_name}{hint}")
    return kwargs, settings


def check_patch_size(patch_size: Sequence[int], strides: Sequence) -> None:
    """The patch must be divisible by the cumulative stride of every stage (nnU-Net's planners ensure it)."""
    total = np.prod(np.array([list(s) if not isinstance(s, int) else [s] * len(patch_size) for s in strides]), axis=0)
    bad = [int(p) for p, t in zip(patch_size, total) if p % t]
    if bad or len(patch_size) != len(total):
        fit = [int(np.ceil(p / t) * t) for p, t in zip(patch_size, total)]
        raise PlansNotSupportedError(f"patch size {list(patch_size)} is not divisible by the network's total stride "
                                     f"{total.tolist()}; use e.g. {fit}")


def check_dimensions(network: str, dims: int, supported: Sequence[int]) -> None:
    """A `dims`-D network must be one `network` supports, or PlansNotSupportedError naming the fix."""
    if dims not in supported:
        only = " or ".join(f"{d}D" for d in supported)
        configs = "3d configuration (3d_fullres, 3d_lowres)" if 2 not in supported else "2d or 3d configuration"
        raise PlansNotSupportedError(f"{network} is {only} only; these plans are {dims}D: train a {configs}")


def check_configuration(patch_size: Sequence[int], conv_op: Type[nn.Module], strides: Sequence, network: str,
                        supported_dims: Sequence[int]) -> None:
    """A configuration's patch fits `network`: dimensionality supported and equal to conv_op's, divisible."""
    dims = convert_conv_op_to_dim(conv_op)
    check_dimensions(network, len(patch_size), supported_dims)
    if len(patch_size) != dims:
        raise PlansNotSupportedError(f"the plans' patch size {list(patch_size)} is {len(patch_size)}D but their "
                                     f"conv_op {conv_op.__name__} is {dims}D")
    check_patch_size(patch_size, strides)
