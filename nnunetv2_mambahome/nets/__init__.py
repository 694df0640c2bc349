"""Networks: the plans-driven MambaHoMEUNet and the peer Mamba U-Nets (docs/peers.md), on nnU-Net plans."""
from .mamba_home_unet import MambaHoMEUNet
from .peer_unets import (PEER_NETWORKS, BiSegMambaUNet, MultiSegMambaUNet, PeerMambaUNet, SegMambaSkipUNet,
                         SegMambaUNet, TamingSegMambaUNet, UMambaBotUNet, UMambaEncUNet, build_peer_network)
from .stage_rule import MambaHoMERule, StageConfig, available_presets, load_preset

__all__ = ["BiSegMambaUNet", "MambaHoMERule", "MambaHoMEUNet", "MultiSegMambaUNet", "PEER_NETWORKS", "PeerMambaUNet",
           "SegMambaSkipUNet", "SegMambaUNet", "StageConfig", "TamingSegMambaUNet", "UMambaBotUNet", "UMambaEncUNet",
           "available_presets", "build_peer_network", "load_preset"]
