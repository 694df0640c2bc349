"""Networks on nnU-Net plans: MambaHoMEUNet, the paper-faithful MambaHoMEPaperNet, and the peer Mamba U-Nets."""
from .mamba_home_unet import MambaHoMEUNet
from .paper_net import MambaHoMEPaperNet
from .peer_unets import (PEER_NETWORKS, BiSegMambaUNet, MultiSegMambaUNet, PeerMambaUNet, SegMambaSkipUNet,
                         SegMambaUNet, TamingSegMambaUNet, UMambaBotUNet, UMambaEncUNet, build_peer_network)
from .stage_rule import MambaHoMERule, StageConfig, available_presets, load_preset

__all__ = ["BiSegMambaUNet", "MambaHoMEPaperNet", "MambaHoMERule", "MambaHoMEUNet", "MultiSegMambaUNet",
           "PEER_NETWORKS", "PeerMambaUNet", "SegMambaSkipUNet", "SegMambaUNet", "StageConfig", "TamingSegMambaUNet",
           "UMambaBotUNet", "UMambaEncUNet", "available_presets", "build_peer_network", "load_preset"]
