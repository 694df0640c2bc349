"""The seed papers' other Mamba U-Nets, rebuilt on nnU-Net plans for a like-for-like comparison.

All share one frame (`PeerMambaUNet`): the plan's conv encoder (`PlansEncoder`), token layers from
`mamba_layers` after chosen encoder stages or on the skip connections, nnU-Net's `UNetDecoder` (transposed
convs, deep supervision). What each paper puts where:

- U-Mamba (Ma et al. 2024): residual encoder; `UMambaBotUNet` one LN+Mamba layer (no residual) on the
  bottleneck, `UMambaEncUNet` one after every encoder stage including full resolution.
- Taming Mambas (Lumetti et al. 2025): residual encoder; a Mamba layer (`MambaTrans`) after every encoder
  stage, i.e. before each downsampling and at the bottleneck: uni- (`TamingSegMambaUNet`), bi-
  (`BiSegMambaUNet`) or multi-directional (`MultiSegMambaUNet`); `SegMambaSkipUNet` keeps the encoder
  convolutional and puts a bidirectional layer on every skip connection (bottleneck included).
- SegMamba (Xing et al. 2024): the plan's conv stages (plain or residual as planned), then on every stage
  below full resolution a GSC and 2 tri-orientated Mamba layers.

See docs/peers.md for the differences from the released code.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Type, Union

import numpy as np
import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0
from torch import nn

from ..modules import GatedSpatialConv
from .from_plans import check_3d_configuration, conv_plan_kwargs
from .mamba_home_unet import instance_norm_for
from .mamba_layers import Bidirectional, MambaLayer, MambaTrans, MultiAxis, TokenLayer, TriOrientedMambaLayer
from .plans_encoder import IntOrSeq, PlansEncoder


class PeerMambaUNet(AbstractDynamicNetworkArchitectures):
    """Plans encoder + token layers + nnU-Net decoder; subclasses say where the token layers go.

    `residual_encoder=True` turns default (plain) plans into a residual encoder with one BasicBlockD per
    planned conv (ResEnc plans are used as they are). Takes the plans' arch_kwargs like `PlainConvUNet` or
    `ResidualEncoderUNet`. 3D only.
    """

    residual_encoder: bool = True

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: IntOrSeq, conv_op: Type[nn.Module],
                 kernel_sizes: Sequence, strides: Sequence, num_classes: int, n_conv_per_stage_decoder: IntOrSeq,
                 n_conv_per_stage: Optional[IntOrSeq] = None, n_blocks_per_stage: Optional[IntOrSeq] = None,
                 conv_bias: bool = False, norm_op: Optional[Type[nn.Module]] = None,
                 norm_op_kwargs: Optional[dict] = None, dropout_op: Optional[Type[nn.Module]] = None,
                 dropout_op_kwargs: Optional[dict] = None, nonlin: Optional[Type[nn.Module]] = None,
                 nonlin_kwargs: Optional[dict] = None, deep_supervision: bool = False,
                 scan_backend: Optional[str] = None):
        super().__init__()
        if convert_conv_op_to_dim(conv_op) != 3:
            raise ValueError(f"{type(self).__name__} is 3D only: use a 3d configuration")
        if self.residual_encoder and n_blocks_per_stage is None:
            n_blocks_per_stage, n_conv_per_stage = n_conv_per_stage, None
        self.n_stages, self.scan_backend, self.conv_op = n_stages, scan_backend, conv_op
        self.encoder = PlansEncoder(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                                    n_conv_per_stage, n_blocks_per_stage, conv_bias, norm_op, norm_op_kwargs,
                                    dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, self.stage_layer)
        skip_layers = [self.skip_layer(s, c) for s, c in enumerate(self.encoder.output_channels)]
        self.skip_layers = nn.ModuleList(nn.Identity() if layer is None else layer for layer in skip_layers) \
            if any(layer is not None for layer in skip_layers) else None
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision)
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stem" if self.encoder.stem is not None else "encoder.stages.0"
        self.keys_to_in_proj = (f"{self.key_to_stem}.convs.0.conv",) if self.encoder.stem is not None else \
            ("encoder.stages.0.0.convs.0.conv",)

    def stage_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        """The module after encoder stage `stage` (its output is skip and next input), or None."""
        return None

    def skip_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        """The module on stage `stage`'s skip connection only (the encoder path bypasses it), or None."""
        return None

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        skips = self.encoder(x)
        if self.skip_layers is not None:
            skips = [layer(s) for layer, s in zip(self.skip_layers, skips)]
        return self.decoder(skips)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Convolutional feature-map elements (nnU-Net's VRAM proxy); token layers are not counted."""
        return self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """As ResidualEncoderUNet: He init for convolutions, last norm of each residual block zeroed."""
        InitWeights_He(1e-2)(module)
        init_last_bn_before_add_to_0(module)


class UMambaBotUNet(PeerMambaUNet):
    """U-Mamba Bot: LN + Mamba (no residual) on the bottleneck features."""

    def stage_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        return TokenLayer(MambaLayer(channels, scan_backend=self.scan_backend)) if stage == self.n_stages - 1 else None


class UMambaEncUNet(PeerMambaUNet):
    """U-Mamba Enc: LN + Mamba (no residual) after every encoder stage, full resolution included."""

    def stage_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        return TokenLayer(MambaLayer(channels, scan_backend=self.scan_backend))


class TamingSegMambaUNet(PeerMambaUNet):
    """Taming Mambas' SegMamba: one forward `MambaTrans` before each downsampling and at the bottleneck."""

    def stage_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        return TokenLayer(MambaTrans(channels, scan_backend=self.scan_backend))


class BiSegMambaUNet(PeerMambaUNet):
    """Taming Mambas' BiSegMamba: a bidirectional `MambaTrans` pair before each downsampling and at the bottleneck."""

    def stage_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        return TokenLayer(Bidirectional(lambda: MambaTrans(channels, scan_backend=self.scan_backend), channels))


class MultiSegMambaUNet(PeerMambaUNet):
    """Taming Mambas' MultiSegMamba: 4 axis orders x 2 directions, averaged (d_state = min(C, 64) as released)."""

    def stage_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        def bidirectional() -> Bidirectional:
            return Bidirectional(lambda: MambaTrans(channels, d_state_max=64, scan_backend=self.scan_backend), channels)
        return TokenLayer(MultiAxis(bidirectional))


class SegMambaSkipUNet(PeerMambaUNet):
    """Taming Mambas' SegMambaSkip: convolutional encoder, a bidirectional Mamba layer on every skip connection."""

    def skip_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        return TokenLayer(Bidirectional(lambda: MambaTrans(channels, scan_backend=self.scan_backend), channels))


class SegMambaUNet(PeerMambaUNet):
    """SegMamba: the plan's conv stages; below full resolution each adds GSC + `depth` tri-orientated Mamba layers."""

    residual_encoder = False
    depth: int = 2

    def stage_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        if stage == 0:
            return None
        return nn.Sequential(
            GatedSpatialConv(channels, self.conv_op, instance_norm_for(self.conv_op)),
            TokenLayer(*(TriOrientedMambaLayer(channels, scan_backend=self.scan_backend) for _ in range(self.depth))))


PEER_NETWORKS: tuple[Type[PeerMambaUNet], ...] = (
    UMambaBotUNet, UMambaEncUNet, TamingSegMambaUNet, BiSegMambaUNet, MultiSegMambaUNet, SegMambaSkipUNet,
    SegMambaUNet)


def build_peer_network(network_class: Type[PeerMambaUNet], configuration_manager, num_input_channels: int,
                       num_output_channels: int, deep_supervision: bool,
                       scan_backend: Optional[str] = None) -> PeerMambaUNet:
    """`network_class` for an nnU-Net ConfigurationManager (default or ResEnc plans), initialised."""
    name = network_class.__name__
    kwargs, _ = conv_plan_kwargs(configuration_manager.network_arch_class_name,
                                 configuration_manager.network_arch_init_kwargs,
                                 configuration_manager.network_arch_init_kwargs_req_import, network=name)
    check_3d_configuration(configuration_manager, kwargs["strides"], name)
    network = network_class(input_channels=num_input_channels, num_classes=num_output_channels,
                            deep_supervision=deep_supervision, scan_backend=scan_backend, **kwargs)
    network.apply(network.initialize)
    return network
