"""The trainer base for networks on the `PlansUNet` frame (Mamba-HoME and the peers): one way to build them.

`build_network_architecture` (what nnU-Net calls in training and in `nnUNetv2_predict`) is
`network_class.from_configuration` with this trainer's wishes (`network_settings`); the plans decide where
they name a setting. The training log line describes the network that was built, not class attributes, and
a network built in float32 (`force_fp32`, from the _noAMP trainers or the plans) trains without GradScaler.
"""
from __future__ import annotations

from typing import Any, Optional

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..nets.plans_unet import PlansUNet
from ..precision import describe_policy
from .base import MambaTrainerBase


class PlansUNetTrainer(MambaTrainerBase):
    """Builds `network_class` from the plans; not a trainer to run by itself.

    `force_fp32 = True` (the `_noAMP` variants) asks for the network in float32; None leaves it to the plans
    (default: the precision policy of `precision`).
    """

    network_class: type[PlansUNet]
    force_fp32: Optional[bool] = None

    @classmethod
    def network_settings(cls) -> dict[str, Any]:
        """What this trainer asks of the network (None: nothing); see `PlansUNet.settings_from_plans`."""
        return {"force_fp32": cls.force_fp32}

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return cls.network_class.from_configuration(configuration_manager, num_input_channels, num_output_channels,
                                                    enable_deep_supervision, **cls.network_settings())

    def built_network(self) -> PlansUNet:
        """The network without nnU-Net's DDP or torch.compile wrappers."""
        network = self.network.module if isinstance(self.network, DistributedDataParallel) else self.network
        return getattr(network, "_orig_mod", network)

    def describe(self) -> str:
        network = self.built_network()
        autocast = self.device.type == "cuda" and not network.force_fp32  # nnU-Net autocasts on CUDA only
        return f"{network.describe()}; {describe_policy(self.device, autocast)}"

    def initialize(self) -> None:
        super().initialize()
        if self.built_network().force_fp32:
            self.grad_scaler = None
