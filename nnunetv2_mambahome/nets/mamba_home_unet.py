"""MambaHoMEUNet: an nnU-Net-planned U-Net whose encoder stages end in Mamba-HoME blocks.

Everything that shapes the network comes from the nnU-Net plans (stages, features, kernel sizes, strides,
convolutions or residual blocks per stage, norm/nonlin), so it serves any dataset nnU-Net plans, default or
ResEnc. Encoder stage s = nnU-Net's conv stage (its first conv downsamples as the plans say) followed, for
the stages chosen by `stage_rule`, by a `MambaHoMEBlock` (GSC, then Mamba and HoME layers on the stage's
raster token sequence, last axis fastest). The decoder is nnU-Net's `UNetDecoder` (transposed convs, skip
concatenation, deep-supervision heads in nnU-Net's order, `decoder.deep_supervision`).
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Type, Union

import numpy as np
import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from ..acceleration import acceleration_mode
from ..cuda_graphs import graphed
from ..modules import MambaHoMEBlock
from ..precision import float32_region
from .plans_encoder import IntOrSeq, PlansEncoder
from .stage_rule import MambaHoMERule, StageConfig


def instance_norm_for(conv_op: Type[nn.Module]) -> Type[nn.Module]:
    """InstanceNorm of conv_op's dimensionality (the GSC's norm, as in the reference)."""
    return {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[convert_conv_op_to_dim(conv_op)]


class MambaHoMEEncoder(PlansEncoder):
    """The plan's conv stages, each chosen by the stage rule followed by a Mamba-HoME block."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: IntOrSeq, conv_op: Type[nn.Module],
                 kernel_sizes: Sequence, strides: Sequence, n_conv_per_stage: Optional[IntOrSeq],
                 n_blocks_per_stage: Optional[IntOrSeq], stage_configs: Sequence[Optional[StageConfig]],
                 conv_bias: bool, norm_op: Optional[Type[nn.Module]], norm_op_kwargs: Optional[dict],
                 dropout_op: Optional[Type[nn.Module]], dropout_op_kwargs: Optional[dict],
                 nonlin: Optional[Type[nn.Module]], nonlin_kwargs: Optional[dict], scan_backend: Optional[str]):
        def home_block(s: int, channels: int) -> Optional[MambaHoMEBlock]:
            cfg = stage_configs[s]
            if cfg is None:
                return None
            return MambaHoMEBlock(channels, cfg.depth, cfg.group_size, cfg.num_experts, cfg.slots_per_expert,
                                  cfg.num_experts_second, cfg.expert_mult, cfg.d_state, cfg.d_conv, cfg.expand,
                                  cfg.home_out_linear, conv_op=conv_op, norm_op=instance_norm_for(conv_op),
                                  scan_backend=scan_backend)

        super().__init__(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                         n_conv_per_stage, n_blocks_per_stage, conv_bias, norm_op, norm_op_kwargs, dropout_op,
                         dropout_op_kwargs, nonlin, nonlin_kwargs, stage_extra=home_block)
        self.stage_configs = list(stage_configs)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Feature-map elements (nnU-Net's VRAM proxy), including an estimate for the token path."""
        total = super().compute_conv_feature_map_size(input_size)
        size = list(input_size)
        for stride, cfg, c in zip(self.strides, self.stage_configs, self.output_channels):
            size = [i // j for i, j in zip(size, stride)]
            if cfg is not None:
                tokens = int(np.prod(size, dtype=np.int64))
                slots = cfg.num_experts * cfg.slots_per_expert
                # GSC: 8 maps of C; per depth: Mamba ~ (2 + 4*expand) C plus scan states, HoME ~ 4 C + 2 M routing
                per_token = 8 * c + cfg.depth * ((2 + 4 * cfg.expand) * c + 6 * c + 2 * slots)
                total += np.int64(tokens) * per_token
        return total


class MambaHoMEUNet(AbstractDynamicNetworkArchitectures):
    """U-Net built from nnU-Net plans with Mamba-HoME encoder stages; returns nnU-Net's deep-supervision list.

    Give `n_conv_per_stage` (default plans) or `n_blocks_per_stage` (ResEnc plans). `mamba_home` holds the
    stage-rule settings (see `stage_rule.MambaHoMERule`, e.g. {"preset": "light"}); default = paper preset.
    `force_fp32=True` runs the whole network in float32 even under autocast (the no-AMP trainers set it).
    On CUDA, calls are replayed as CUDA graphs when `acceleration.acceleration_mode` says so (the default).
    """

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: IntOrSeq,
                 conv_op: Type[nn.Module], kernel_sizes: Sequence, strides: Sequence, num_classes: int,
                 n_conv_per_stage_decoder: IntOrSeq, n_conv_per_stage: Optional[IntOrSeq] = None,
                 n_blocks_per_stage: Optional[IntOrSeq] = None, conv_bias: bool = False,
                 norm_op: Optional[Type[nn.Module]] = None, norm_op_kwargs: Optional[dict] = None,
                 dropout_op: Optional[Type[nn.Module]] = None, dropout_op_kwargs: Optional[dict] = None,
                 nonlin: Optional[Type[nn.Module]] = None, nonlin_kwargs: Optional[dict] = None,
                 deep_supervision: bool = False, mamba_home: Optional[Mapping[str, Any]] = None,
                 scan_backend: Optional[str] = None, force_fp32: bool = False):
        super().__init__()
        if convert_conv_op_to_dim(conv_op) != 3:
            raise ValueError("MambaHoMEUNet is 3D only (the paper's setting): use a 3d configuration "
                             "(3d_fullres, 3d_lowres, 3d_cascade_fullres), not a 2d one")
        if (n_conv_per_stage is None) == (n_blocks_per_stage is None):
            raise ValueError("give exactly one of n_conv_per_stage (plain plans) or n_blocks_per_stage (ResEnc plans)")
        if n_stages < 2:
            raise ValueError(f"MambaHoMEUNet needs at least 2 stages, the plan has {n_stages}")
        self.rule = MambaHoMERule.from_dict(mamba_home)
        self.input_channels = input_channels
        self.force_fp32 = force_fp32
        self.scan_backend = scan_backend
        self.encoder = MambaHoMEEncoder(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                                        n_conv_per_stage, n_blocks_per_stage, self.rule.stage_configs(n_stages),
                                        conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin,
                                        nonlin_kwargs, scan_backend)
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision)
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stem" if self.encoder.stem is not None else "encoder.stages.0"
        self.keys_to_in_proj = ("encoder.stem.convs.0.conv",) if self.encoder.stem is not None else \
            ("encoder.stages.0.0.convs.0.conv",)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        if x.shape[1] != self.input_channels:
            raise ValueError(f"MambaHoMEUNet was built for {self.input_channels} input channel(s), got a tensor with "
                             f"{x.shape[1]} (shape {tuple(x.shape)})")
        if x.is_cuda and not torch.compiler.is_compiling() and \
                acceleration_mode(x.device, self.scan_backend) == "graphs":
            return graphed(self, self._forward)(x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """The eager forward (what CUDA graphs capture)."""
        if self.force_fp32:
            with float32_region(x.device):
                return self.decoder(self.encoder(x.float()))
        return self.decoder(self.encoder(x))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        if len(input_size) != 3:
            raise ValueError("give the spatial patch size only, e.g. (z, y, x)")
        return self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """He init for convolutions (nnU-Net's); Mamba's and HoME's own initialisation is left alone."""
        InitWeights_He(1e-2)(module)
