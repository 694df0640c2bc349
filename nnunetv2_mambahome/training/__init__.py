"""nnU-Net trainer classes; found by nnU-Net through the directory `nnunetv2-mambahome trainer-path` prints.

`mamba_home_trainers` (MambaHoMEUNet), `peer_trainers` (U-Mamba, Taming Mambas, SegMamba), `paper_trainers`
(the official network and recipe), all made of `plans_unet_trainer.PlansUNetTrainer` or `base.MambaTrainerBase`
and the public variant factories of `variants` (`_<N>epochs`, `_smoke`, `_noAMP`, `_RAdam`).
"""
from . import mamba_home_trainers, paper_trainers, peer_trainers
from .mamba_home_trainers import *  # noqa: F401,F403
from .paper_trainers import *  # noqa: F401,F403
from .peer_trainers import *  # noqa: F401,F403

__all__ = [*mamba_home_trainers.__all__, *paper_trainers.__all__, *peer_trainers.__all__]
