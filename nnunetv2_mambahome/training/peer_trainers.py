"""Trainers for the seed papers' other Mamba U-Nets (U-Mamba, Taming Mambas, SegMamba), on nnU-Net 2.8 plans.

Same recipe as `nnUNetTrainer` (and `nnUNetTrainerMambaHoME`): SGD 1e-2, poly LR, deep supervision,
1000 x 250 iterations, fp16 autocast with the token layers under Mamba-HoME's precision policy (`precision`),
torch.compile off; only the network differs. `_noAMP` variants run the whole network in float32; the
released peers' own policy (float32 Mamba layers, fp16 convolutions) is NNUNETV2_MAMBAHOME_TOKEN_DTYPE=float32.
`_RAdam` variants of the Taming Mambas trainers use that paper's recipe instead (RAdam 3e-4, cosine
annealing to 5e-6 over the run). `_smoke` variants are seconds-long CPU runs for tests, and `_<N>epochs`
variants shorten the schedule as nnU-Net's own `nnUNetTrainer_<N>epochs` do.
"""
from __future__ import annotations

from ..nets.peer_unets import (BiSegMambaUNet, MultiSegMambaUNet, PeerMambaUNet, SegMambaSkipUNet, SegMambaUNet,
                               TamingSegMambaUNet, UMambaBotUNet, UMambaEncUNet)
from .plans_unet_trainer import PlansUNetTrainer
from .variants import epochs_variants, no_amp_variant, radam_variant, smoke_variant


class PeerMambaTrainer(PlansUNetTrainer):
    """Base: builds `network_class` from the plans; not a trainer to run by itself."""

    network_class: type[PeerMambaUNet]


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


_TAMING = (nnUNetTrainerTamingSegMamba, nnUNetTrainerBiSegMamba, nnUNetTrainerMultiSegMamba, nnUNetTrainerSegMambaSkip)
_BASES = (nnUNetTrainerUMambaBot, nnUNetTrainerUMambaEnc, *_TAMING, nnUNetTrainerSegMamba)
_RADAM = {t.__name__: t for t in (radam_variant(b) for b in _TAMING)}
_NO_AMP = {t.__name__: t for t in (no_amp_variant(b) for b in _BASES)}
_SMOKE = {t.__name__: t for t in (smoke_variant(b) for b in _BASES)}
_EPOCHS = epochs_variants(*_BASES, *_RADAM.values())
globals().update(_RADAM)
globals().update(_NO_AMP)
globals().update(_SMOKE)
globals().update(_EPOCHS)

__all__ = [b.__name__ for b in _BASES] + [*_RADAM, *_NO_AMP, *_SMOKE, *_EPOCHS]
