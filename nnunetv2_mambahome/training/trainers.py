"""nnU-Net trainers for Mamba-HoME: one small subclass per idea, in nnU-Net's naming style.

Recipe: nnU-Net's own (SGD 1e-2, poly LR, deep supervision, 1000 x 250 iterations, fp16 autocast with
GradScaler) so that results compare one-to-one with `nnUNetTrainer`; only the network differs. Inside
autocast the token path never runs in float16: its Mamba layers compute in bfloat16 (where the GPU has it),
its residual stream, scan state and HoME routing in float32 (see `nnunetv2_mambahome.precision`);
`_noAMP` variants run everything in float32. On GPUs the network replays CUDA graphs instead of nnU-Net's
torch.compile (see `nnunetv2_mambahome.acceleration`).
"""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import nnUNetTrainerNoMirroring
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from ..nets.from_plans import build_from_configuration
from ..precision import describe_policy
from .base import MambaTrainerBase


class nnUNetTrainerMambaHoME(MambaTrainerBase):
    """MambaHoMEUNet (paper preset) with nnU-Net's default recipe."""

    mamba_home_preset: str = "paper"
    force_fp32: bool = False

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return build_from_configuration(configuration_manager, num_input_channels, num_output_channels,
                                        enable_deep_supervision, preset=cls.mamba_home_preset,
                                        force_fp32=cls.force_fp32)

    def describe(self) -> str:
        autocast = self.device.type == "cuda" and not self.force_fp32  # nnU-Net autocasts on CUDA only
        return f"Mamba-HoME preset '{self.mamba_home_preset}', {describe_policy(self.device, autocast)}"

    def initialize(self) -> None:
        super().initialize()
        if self.force_fp32:
            self.grad_scaler = None


class nnUNetTrainerMambaHoME_noAMP(nnUNetTrainerMambaHoME):
    """Everything in float32 (no autocast, no GradScaler), as the official Mamba-HoME training."""

    force_fp32 = True


class nnUNetTrainerMambaHoMELight(nnUNetTrainerMambaHoME):
    """The `light` preset: depth 1, half the experts, thinner experts."""

    mamba_home_preset = "light"


class nnUNetTrainerMambaHoMELarge(nnUNetTrainerMambaHoME):
    """The `large` preset: depth 3, twice the paper's experts."""

    mamba_home_preset = "large"


def _epochs_variant(base: type, epochs: int) -> type:
    """`base` with num_epochs = `epochs`, named nnU-Net style (`<base>_<epochs>epochs`)."""
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs

    name = f"{base.__name__}_{epochs}epochs"
    return type(name, (base,), {"__init__": __init__, "__doc__": f"{base.__name__} for {epochs} epochs.",
                                "__module__": base.__module__})


def _short_schedule(base: type, suffix: str, epochs: int, iterations: int, val_iterations: int, doc: str) -> type:
    """`<base>_<suffix>`: a fixed short schedule without mirroring (train-time or test-time)."""
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        self.num_iterations_per_epoch = iterations
        self.num_val_iterations_per_epoch = val_iterations

    return type(f"{base.__name__}_{suffix}", (base, nnUNetTrainerNoMirroring),
                {"__init__": __init__, "__doc__": f"{base.__name__}: {doc}", "__module__": base.__module__})


def _smoke_variant(base: type) -> type:
    """`<base>_smoke`: seconds-long CPU run for tests."""
    return _short_schedule(base, "smoke", 2, 3, 1, "2 epochs x 3 iterations, 1 validation iteration, no mirroring "
                                                   "(CPU smoke tests).")


nnUNetTrainerMambaHoMELight_smoke = _smoke_variant(nnUNetTrainerMambaHoMELight)
nnUNetTrainerMambaHoMELight_demo = _short_schedule(
    nnUNetTrainerMambaHoMELight, "demo", 10, 20, 4, "the README demo's short CPU schedule, 10 epochs x 20 "
                                                    "iterations, no mirroring.")


# nnU-Net-style short schedules: nnUNetTrainerMambaHoME_5epochs, ..._noAMP_..., Light_...
_VARIANTS = {f"{base.__name__}_{n}epochs": _epochs_variant(base, n)
             for base in (nnUNetTrainerMambaHoME, nnUNetTrainerMambaHoME_noAMP, nnUNetTrainerMambaHoMELight)
             for n in (1, 5, 10, 50, 100, 250)}
globals().update(_VARIANTS)

__all__ = ["nnUNetTrainerMambaHoME", "nnUNetTrainerMambaHoME_noAMP", "nnUNetTrainerMambaHoMELight",
           "nnUNetTrainerMambaHoMELarge", "nnUNetTrainerMambaHoMELight_smoke", "nnUNetTrainerMambaHoMELight_demo",
           *_VARIANTS]
