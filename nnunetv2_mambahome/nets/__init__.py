"""Networks on nnU-Net plans: the `PlansUNet` frame, MambaHoMEUNet and the peer Mamba U-Nets on it, and the
paper-faithful MambaHoMEPaperNet (3D, not plans-driven)."""
from .mamba_home_unet import MambaHoMEUNet
from .paper_net import MambaHoMEPaperNet
from .peer_unets import (PEER_NETWORKS, BiSegMambaUNet, MultiSegMambaUNet, PeerMambaUNet, SegMambaSkipUNet,
                         SegMambaUNet, TamingSegMambaUNet, UMambaBotUNet, UMambaEncUNet)
from .plans_encoder import PlansNotSupportedError
from .plans_unet import PlansUNet
from .stage_rule import MambaHoMERule, StageConfig, available_presets, load_preset

__all__ = ["BiSegMambaUNet", "MambaHoMEPaperNet", "MambaHoMERule", "MambaHoMEUNet", "MultiSegMambaUNet",
           "PEER_NETWORKS", "PeerMambaUNet", "PlansNotSupportedError", "PlansUNet", "SegMambaSkipUNet",
           "SegMambaUNet", "StageConfig", "TamingSegMambaUNet", "UMambaBotUNet", "UMambaEncUNet",
           "available_presets", "load_preset"]
