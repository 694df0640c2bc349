"""Building blocks (nn.Modules) of Mamba-HoME; kernels live in `nnunetv2_mambahome.ops`."""
from .dyt import DynamicTanh
from .dynamic_slots_soft_moe import DynamicSlotsSoftMoE
from .geglu_experts import GEGLUExperts
from .gsc import GatedSpatialConv
from .home import HoME, expert_hidden_size
from .mamba_home_block import MambaHoMEBlock, ResidualHoMELayer, ResidualMambaLayer
from .mamba_mixer import MambaMixer
from .rms_norm import RMSNorm

__all__ = [
    "DynamicSlotsSoftMoE", "DynamicTanh", "GEGLUExperts", "GatedSpatialConv", "HoME", "MambaHoMEBlock",
    "MambaMixer", "RMSNorm", "ResidualHoMELayer", "ResidualMambaLayer", "expert_hidden_size",
]
