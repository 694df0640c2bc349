"""Trainers for the seed papers' other Mamba U-Nets (U-Mamba, Taming Mambas, SegMamba), on nnU-Net 2.8 plans.

Same recipe as `nnUNetTrainer` (and `nnUNetTrainerMambaHoME`): SGD 1e-2, poly LR, deep supervision,
1000 x 250 iterations, fp16 autocast with the Mamba layers in float32, torch.compile off; only the network
differs. `_RAdam` variants of the Taming Mambas trainers use that paper's recipe instead (RAdam 3e-4,
cosine annealing to 5e-6 over the run). `_smoke` variants are seconds-long CPU runs for tests, and
`_<N>epochs` variants shorten the schedule as nnU-Net's own `nnUNetTrainer_<N>epochs` do.
"""
from __future__ import annotations

import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from ..nets.peer_unets import (BiSegMambaUNet, MultiSegMambaUNet, PeerMambaUNet, SegMambaSkipUNet, SegMambaUNet,
                               TamingSegMambaUNet, UMambaBotUNet, UMambaEncUNet, build_peer_network)
from .base import MambaTrainerBase
from .trainers import _epochs_variant, _smoke_variant


class PeerMambaTrainer(MambaTrainerBase):
    """Base: builds `network_class` from the plans; not a trainer to run by itself."""

    network_class: type[PeerMambaUNet]

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return build_peer_network(cls.network_class, configuration_manager, num_input_channels, num_output_channels,
                                  enable_deep_supervision)

    def describe(self) -> str:
        return f"{self.network_class.__name__}, Mamba layers float32, rest autocast"


class nnUNetTrainerUMambaBot(PeerMambaTrainer):
    """U-Mamba Bot (Ma et al. 2024): residual encoder, one Mamba layer at the bottleneck."""

    network_class = UMambaBotUNet


class nnUNetTrainerUMambaEnc(PeerMambaTrainer):
    """U-Mamba Enc: residual encoder, a Mamba layer after every encoder stage (full resolution included)."""

    network_class = UMambaEncUNet


class nnUNetTrainerTamingSegMamba(PeerMambaTrainer):
    """Taming Mambas' SegMamba: a Mamba layer before each downsampling and at the bottleneck."""

    network_class = TamingSegMambaUNet


class nnUNetTrainerBiSegMamba(PeerMambaTrainer):
    """Taming Mambas' BiSegMamba: bidirectional Mamba layers before each downsampling and at the bottleneck."""

    network_class = BiSegMambaUNet


class nnUNetTrainerMultiSegMamba(PeerMambaTrainer):
    """Taming Mambas' MultiSegMamba: 4 axis orders x 2 directions per layer, averaged."""

    network_class = MultiSegMambaUNet


class nnUNetTrainerSegMambaSkip(PeerMambaTrainer):
    """Taming Mambas' SegMambaSkip: bidirectional Mamba layers on the skip connections."""

    network_class = SegMambaSkipUNet


class nnUNetTrainerSegMamba(PeerMambaTrainer):
    """SegMamba (Xing et al. 2024): GSC + tri-orientated Mamba per stage below full resolution."""

    network_class = SegMambaUNet


def _radam_variant(base: type) -> type:
    """`<base>_RAdam`: Taming Mambas' recipe, RAdam lr 3e-4 (nnU-Net's weight decay), cosine to 5e-6 over the run."""
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.initial_lr = 3e-4

    def configure_optimizers(self):
        optimizer = torch.optim.RAdam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, CosineAnnealingLR(optimizer, T_max=self.num_epochs, eta_min=5e-6)

    return type(f"{base.__name__}_RAdam", (base,), {
        "__init__": __init__, "configure_optimizers": configure_optimizers, "__module__": __name__,
        "__doc__": f"{base.__name__} with Taming Mambas' recipe: RAdam 3e-4, cosine annealing to 5e-6."})


_TAMING = (nnUNetTrainerTamingSegMamba, nnUNetTrainerBiSegMamba, nnUNetTrainerMultiSegMamba, nnUNetTrainerSegMambaSkip)
_BASES = (nnUNetTrainerUMambaBot, nnUNetTrainerUMambaEnc, *_TAMING, nnUNetTrainerSegMamba)
_RADAM = {t.__name__: t for t in (_radam_variant(b) for b in _TAMING)}
_SMOKE = {t.__name__: t for t in (_smoke_variant(b) for b in _BASES)}
_EPOCHS = {t.__name__: t for t in (_epochs_variant(b, n) for b in (*_BASES, *_RADAM.values())
                                   for n in (1, 5, 10, 50, 100, 250))}
globals().update(_RADAM)
globals().update(_SMOKE)
globals().update(_EPOCHS)

__all__ = [b.__name__ for b in _BASES] + [*_RADAM, *_SMOKE, *_EPOCHS]
