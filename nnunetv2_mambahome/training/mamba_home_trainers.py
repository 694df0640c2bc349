"""nnU-Net trainers for Mamba-HoME: one small subclass per idea, in nnU-Net's naming style.

Recipe: nnU-Net's own (SGD 1e-2, poly LR, deep supervision, 1000 x 250 iterations, fp16 autocast with
GradScaler) so that results compare one-to-one with `nnUNetTrainer`; only the network differs. Inside
autocast the token path never runs in float16: its Mamba layers compute in bfloat16 (where the GPU has it),
its residual stream, scan state and HoME routing in float32 (see `nnunetv2_mambahome.precision`);
`_noAMP` variants run everything in float32. On GPUs the network replays CUDA graphs instead of nnU-Net's
torch.compile (see `nnunetv2_mambahome.acceleration`).

The network's Mamba-HoME settings come from the plans (see `nets.mamba_home_unet`): `nnUNetTrainerMambaHoME`
follows them (the paper preset for stock plans); `...Light` / `...Large` bring their preset to stock plans
and refuse plans that name another one.
"""
from __future__ import annotations

from typing import Any, Optional

from ..nets.mamba_home_unet import MambaHoMEUNet
from .plans_unet_trainer import PlansUNetTrainer
from .variants import epochs_variants, no_amp_variant, short_schedule, smoke_variant


class nnUNetTrainerMambaHoME(PlansUNetTrainer):
    """MambaHoMEUNet with nnU-Net's default recipe: the plans' Mamba-HoME settings (paper preset for stock plans)."""

    network_class = MambaHoMEUNet
    mamba_home_preset: Optional[str] = None  # None: the plans' preset

    @classmethod
    def network_settings(cls) -> dict[str, Any]:
        return {**super().network_settings(), "preset": cls.mamba_home_preset}


nnUNetTrainerMambaHoME_noAMP = no_amp_variant(nnUNetTrainerMambaHoME)


class nnUNetTrainerMambaHoMELight(nnUNetTrainerMambaHoME):
    """The `light` preset: depth 1, half the experts, thinner experts."""

    mamba_home_preset = "light"


class nnUNetTrainerMambaHoMELarge(nnUNetTrainerMambaHoME):
    """The `large` preset: depth 3, twice the paper's experts."""

    mamba_home_preset = "large"


nnUNetTrainerMambaHoMELight_smoke = smoke_variant(nnUNetTrainerMambaHoMELight)
nnUNetTrainerMambaHoMELight_demo = short_schedule(
    nnUNetTrainerMambaHoMELight, "demo", 10, 20, 4, "the README demo's short CPU schedule, 10 epochs x 20 "
                                                    "iterations, no mirroring.")

# nnU-Net-style short schedules: nnUNetTrainerMambaHoME_5epochs, ..._noAMP_..., Light_...
_VARIANTS = epochs_variants(nnUNetTrainerMambaHoME, nnUNetTrainerMambaHoME_noAMP, nnUNetTrainerMambaHoMELight)
globals().update(_VARIANTS)

__all__ = ["nnUNetTrainerMambaHoME", "nnUNetTrainerMambaHoME_noAMP", "nnUNetTrainerMambaHoMELight",
           "nnUNetTrainerMambaHoMELarge", "nnUNetTrainerMambaHoMELight_smoke", "nnUNetTrainerMambaHoMELight_demo",
           *_VARIANTS]
