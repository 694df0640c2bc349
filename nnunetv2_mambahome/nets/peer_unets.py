"""The seed papers' other Mamba U-Nets, rebuilt on nnU-Net plans for a like-for-like comparison.

All are `PlansUNet`s (the frame MambaHoMEUNet uses too): the plan's conv encoder, token layers from
`modules.peer_mamba_layers` after chosen encoder stages (`stage_layer`) or on the skip connections
(`skip_layer`), nnU-Net's `UNetDecoder` (transposed convs, deep supervision), ResidualEncoderUNet's
initialisation. What each paper puts where:

- U-Mamba (Ma et al. 2024): residual encoder; `UMambaBotUNet` one LN+Mamba layer (no residual) on the
  bottleneck, `UMambaEncUNet` one after every encoder stage including full resolution. 2D or 3D, as U-Mamba
  ships both.
- Taming Mambas (Lumetti et al. 2025): residual encoder; a Mamba layer (`MambaTrans`) after every encoder
  stage, i.e. before each downsampling and at the bottleneck: uni- (`TamingSegMambaUNet`), bi-
  (`BiSegMambaUNet`) or multi-directional (`MultiSegMambaUNet`); `SegMambaSkipUNet` keeps the encoder
  convolutional and puts a bidirectional layer on every skip connection (bottleneck included). 3D only.
- SegMamba (Xing et al. 2024): the plan's conv stages (plain or residual as planned), then on every stage
  below full resolution a GSC and 2 tri-orientated Mamba layers. 3D only.

See docs/peers.md for the differences from the released code.
"""
from __future__ import annotations

from typing import Optional, Type

from torch import nn

from ..modules import GatedSpatialConv
from ..modules.peer_mamba_layers import Bidirectional, MambaLayer, MambaTrans, MultiAxis, TokenLayer, TriOrientedMambaLayer
from .plans_encoder import instance_norm_for
from .plans_unet import PlansUNet


class PeerMambaUNet(PlansUNet):
    """Base of the peers: a residual encoder (default plans become one BasicBlockD per planned conv; ResEnc
    plans are used as they are); subclasses say where the token layers go."""

    residual_encoder = True
    supported_dims = (3,)  # the papers' setting; U-Mamba also ships 2D


class UMambaBotUNet(PeerMambaUNet):
    """U-Mamba Bot: LN + Mamba (no residual) on the bottleneck features."""

    supported_dims = (2, 3)

    def stage_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        return TokenLayer(MambaLayer(channels, scan_backend=self.scan_backend)) if stage == self.n_stages - 1 else None


class UMambaEncUNet(PeerMambaUNet):
    """U-Mamba Enc: LN + Mamba (no residual) after every encoder stage, full resolution included."""

    supported_dims = (2, 3)

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
