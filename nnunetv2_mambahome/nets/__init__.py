"""Networks: the plans-driven MambaHoMEUNet and the paper-faithful MambaHoMEPaperNet."""
from .mamba_home_unet import MambaHoMEUNet
from .paper_net import MambaHoMEPaperNet
from .stage_rule import MambaHoMERule, StageConfig, available_presets, load_preset

__all__ = ["MambaHoMEPaperNet", "MambaHoMERule", "MambaHoMEUNet", "StageConfig", "available_presets", "load_preset"]
