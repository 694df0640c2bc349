"""Networks: the plans-driven MambaHoMEUNet and the paper-faithful MambaHoMEPaperNet."""
from .mamba_home_unet import MambaHoMEUNet
from .stage_rule import MambaHoMERule, StageConfig, available_presets, load_preset

__all__ = ["MambaHoMERule", "MambaHoMEUNet", "StageConfig", "available_presets", "load_preset"]
