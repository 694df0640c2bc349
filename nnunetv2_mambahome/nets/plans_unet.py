"""PlansUNet: the frame every plans-driven network of the package is built on (Mamba-HoME and the peers).

Encoder from the plans (`PlansEncoder`: the plan's conv stages, plain or ResEnc), an optional module after
each encoder stage (`stage_layer` hook, its output is skip and next input) and on each skip connection only
(`skip_layer` hook), nnU-Net's `UNetDecoder` (transposed convs, skip concatenation, deep-supervision heads in
nnU-Net's order, `decoder.deep_supervision`), ResidualEncoderUNet's initialisation. Conv biases that the plans'
instance norms cancel are kept as frozen parameters and not applied (`modules.cancelled_bias`); activations in
the standard or channels-last layout (`layout`, NNUNETV2_MAMBAHOME_LAYOUT). Subclasses override the
hooks; they set the plain attributes their hooks read before calling `PlansUNet.__init__`, which builds the
encoder and so calls the hooks.

`from_configuration` is the one builder, used by the trainers and by `nnUNetv2_predict` through them. It
accepts the same plans nnU-Net's `get_network_from_plans` does and builds the same network from them: stock
plans (`PlainConvUNet`, `ResidualEncoderUNet`) give the conv part, plans naming the network class give its
constructor arguments exactly. The plans decide; what a trainer asks for (`force_fp32` of the _noAMP
trainers, a Mamba-HoME preset) fills what the plans leave open, and asking for something else than the plans
name is an error.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Type, Union

import numpy as np
import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0
from torch import nn

from ..acceleration import acceleration_mode
from ..cuda_graphs import graphed
from ..modules.cancelled_bias import skip_cancelled_biases
from ..modules.instance_norm import instance_norm_op
from .layout import resolved_layout, store_channels_last, to_channels_last, to_standard
from ..ops import requested_backend
from ..precision import float32_region
from .plans_encoder import (IntOrSeq, PlansEncoder, PlansNotSupportedError, check_configuration, check_dimensions,
                            conv_plan_kwargs)


def plans_conflict(setting: str, trainer_value: Any, plans_value: Any, fix: str) -> PlansNotSupportedError:
    """The error for a trainer asking for another value of a setting than the plans name."""
    return PlansNotSupportedError(f"the trainer asks for {setting} {trainer_value!r} but the plans name {plans_value!r}; "
                                  f"the plans decide the network: {fix}")


class PlansUNet(AbstractDynamicNetworkArchitectures):
    """Plans encoder + stage/skip layers + nnU-Net decoder; returns nnU-Net's deep-supervision list.

    Give `n_conv_per_stage` (default plans) or `n_blocks_per_stage` (ResEnc plans); `residual_encoder=True`
    turns default plans into a residual encoder with one BasicBlockD per planned conv. `scan_backend` is
    the Mamba layers' selective-scan backend (None: NNUNETV2_MAMBAHOME_SCAN / auto); `force_fp32=True` runs
    the whole network in float32 even under autocast (what the _noAMP trainers set). With
    `replays_cuda_graphs`, CUDA calls are replayed as CUDA graphs where `acceleration` says so.
    """

    residual_encoder: bool = False
    supported_dims: tuple[int, ...] = (2, 3)
    # on CUDA, replay calls as CUDA graphs when `acceleration.acceleration_mode` says so (verified for Mamba-HoME)
    replays_cuda_graphs: bool = False
    # arch_kwargs keys, besides the conv plan, that plans naming the class may carry (constructor arguments)
    plans_settings: tuple[str, ...] = ("scan_backend", "force_fp32")

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: IntOrSeq, conv_op: Type[nn.Module],
                 kernel_sizes: Sequence, strides: Sequence, num_classes: int, n_conv_per_stage_decoder: IntOrSeq,
                 n_conv_per_stage: Optional[IntOrSeq] = None, n_blocks_per_stage: Optional[IntOrSeq] = None,
                 conv_bias: bool = False, norm_op: Optional[Type[nn.Module]] = None,
                 norm_op_kwargs: Optional[dict] = None, dropout_op: Optional[Type[nn.Module]] = None,
                 dropout_op_kwargs: Optional[dict] = None, nonlin: Optional[Type[nn.Module]] = None,
                 nonlin_kwargs: Optional[dict] = None, deep_supervision: bool = False,
                 scan_backend: Optional[str] = None, force_fp32: bool = False):
        super().__init__()
        name = type(self).__name__
        check_dimensions(name, convert_conv_op_to_dim(conv_op), self.supported_dims)
        if (n_conv_per_stage is None) == (n_blocks_per_stage is None):
            raise ValueError("give exactly one of n_conv_per_stage (plain plans) or n_blocks_per_stage (ResEnc plans)")
        if n_stages < 2:
            raise ValueError(f"{name} needs at least 2 stages, the plan has {n_stages}")
        if scan_backend is not None:
            requested_backend(scan_backend)  # an unknown name fails here, not at the first forward
        if self.residual_encoder and n_blocks_per_stage is None:
            n_blocks_per_stage, n_conv_per_stage = n_conv_per_stage, None
        self.input_channels, self.n_stages, self.conv_op = input_channels, n_stages, conv_op
        self.scan_backend, self.force_fp32 = scan_backend, bool(force_fp32)
        norm_op = instance_norm_op(norm_op) if norm_op is not None else None
        self.encoder = PlansEncoder(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                                    n_conv_per_stage, n_blocks_per_stage, conv_bias, norm_op, norm_op_kwargs,
                                    dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, self.stage_layer)
        skip_layers = [self.skip_layer(s, c) for s, c in enumerate(self.encoder.output_channels)]
        self.skip_layers = nn.ModuleList(nn.Identity() if layer is None else layer for layer in skip_layers) \
            if any(layer is not None for layer in skip_layers) else None
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision)
        skip_cancelled_biases(self)  # conv biases the plans' instance norms cancel: kept, not applied
        self.layout = resolved_layout()  # activations standard or channels-last (`layout`)
        if self.layout == "channels_last":
            store_channels_last(self)
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stem" if self.encoder.stem is not None else "encoder.stages.0"
        self.keys_to_in_proj = (f"{self.key_to_stem}.convs.0.conv",) if self.encoder.stem is not None else \
            ("encoder.stages.0.0.convs.0.conv",)

    # ---- hooks -------------------------------------------------------------------------------------------
    def stage_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        """The module after encoder stage `stage` (its output is skip and next input), or None."""
        return None

    def skip_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        """The module on stage `stage`'s skip connection only (the encoder path bypasses it), or None."""
        return None

    def token_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Elements the stage/skip layers add to nnU-Net's VRAM proxy (none counted by default)."""
        return np.int64(0)

    # ---- network -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        if x.shape[1] != self.input_channels:
            raise ValueError(f"{type(self).__name__} was built for {self.input_channels} input channel(s), got a "
                             f"tensor with {x.shape[1]} (shape {tuple(x.shape)})")
        if self.replays_cuda_graphs and x.is_cuda and not torch.compiler.is_compiling() and \
                acceleration_mode(x.device, self.scan_backend) == "graphs":
            return graphed(self, self._forward)(x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """The eager forward (what CUDA graphs capture)."""
        if self.layout == "channels_last":
            return to_standard(self._in_precision(to_channels_last(x)))
        return self._in_precision(x)

    def _in_precision(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        if self.force_fp32:
            with float32_region(x.device):
                return self._unet(x.float())
        return self._unet(x)

    def _unet(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        skips = self.encoder(x)
        if self.skip_layers is not None:
            skips = [layer(s) for layer, s in zip(self.skip_layers, skips)]
        return self.decoder(skips)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Feature-map elements (nnU-Net's VRAM proxy for planning) of the convolutions and the hooks' layers."""
        if len(input_size) != convert_conv_op_to_dim(self.conv_op):
            raise ValueError("give the spatial patch size only, e.g. (z, y, x) or (y, x)")
        return self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size) + self.token_feature_map_size(input_size)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """As ResidualEncoderUNet: He init for convolutions, last norm of each residual block zeroed (a no-op
        for plain stages). The Mamba and HoME layers' own initialisation is left alone."""
        InitWeights_He(1e-2)(module)
        init_last_bn_before_add_to_0(module)

    # ---- what was built ----------------------------------------------------------------------------------
    def layer_stages(self) -> dict[str, list[int]]:
        """Encoder stages with a stage layer, and with a skip layer."""
        skips = [] if self.skip_layers is None else \
            [s for s, m in enumerate(self.skip_layers) if not isinstance(m, nn.Identity)]
        return {"stage_layers": [s for s, stage in enumerate(self.encoder.stages) if len(stage) > 1],
                "skip_layers": skips}

    def settings(self) -> dict[str, Any]:
        """The settings the network was built with that its state_dict shapes do not show."""
        return {"network": type(self).__name__, "scan_backend": self.scan_backend, "force_fp32": self.force_fp32,
                "deep_supervision": self.decoder.deep_supervision, "layout": self.layout, **self.layer_stages()}

    def describe(self) -> str:
        """One line on what was built (for the training log)."""
        where = self.layer_stages()
        parts = [f"{type(self).__name__}", f"{len(self.encoder.stages)} stages"]
        parts += [f"{k.replace('_', ' ')} on stages {v}" for k, v in where.items() if v]
        parts.append(f"scan backend {self.scan_backend or 'env/auto'}")
        return ", ".join(parts)

    # ---- building from the plans -------------------------------------------------------------------------
    @classmethod
    def settings_from_plans(cls, plans_settings: Optional[Mapping[str, Any]], **wanted: Any) -> dict[str, Any]:
        """Constructor settings: the plans' (None: stock plans, which name none), then what the caller wants
        (`force_fp32=True` of the _noAMP trainers, a `scan_backend`; None: nothing) where the plans leave it open.
        Wanting another value than the plans name is an error."""
        settings = dict(plans_settings or {})
        for key, value in wanted.items():
            if key not in cls.plans_settings:
                raise TypeError(f"{cls.__name__} has no plans setting {key!r}; known: {cls.plans_settings}")
            if value is None:
                continue
            if settings.get(key, value) != value:
                raise plans_conflict(key, value, settings[key], f"remove {key} from the plans' arch_kwargs or build "
                                                                 f"without asking for {key}={value!r}")
            settings[key] = value
        return settings

    @classmethod
    def from_configuration(cls, configuration_manager, num_input_channels: int, num_output_channels: int,
                           deep_supervision: bool, **wanted: Any) -> "PlansUNet":
        """The network for an nnU-Net ConfigurationManager, initialised (what trainers and nnUNetv2_predict build).

        `wanted` goes to `settings_from_plans` (the trainer's wishes, None where it has none).
        """
        name = cls.__name__
        conv, plans_settings = conv_plan_kwargs(configuration_manager.network_arch_class_name,
                                                configuration_manager.network_arch_init_kwargs,
                                                configuration_manager.network_arch_init_kwargs_req_import, name,
                                                cls.plans_settings)
        check_configuration(configuration_manager.patch_size, conv["conv_op"], conv["strides"], name,
                            cls.supported_dims)
        network = cls(input_channels=num_input_channels, num_classes=num_output_channels,
                      deep_supervision=deep_supervision, **conv,
                      **cls.settings_from_plans(plans_settings, **wanted))
        network.apply(network.initialize)
        return network
