"""MambaHoMEUNet: an nnU-Net-planned U-Net whose encoder stages end in Mamba-HoME blocks.

Everything that shapes the network comes from the nnU-Net plans (stages, features, kernel sizes, strides,
convolutions or residual blocks per stage, norm/nonlin), so it serves any dataset nnU-Net plans, default or
ResEnc, 3D or 2D. Encoder stage s = nnU-Net's conv stage (its first conv downsamples as the plans say)
followed, for the stages chosen by `stage_rule`, by a `MambaHoMEBlock` (GSC, then Mamba and HoME layers on
the stage's raster token sequence, last axis fastest; 2D or 3D through conv_op/norm_op). The frame
(`PlansUNet`) supplies nnU-Net's `UNetDecoder`, deep supervision, the plans checks and ResEnc's
initialisation.

The Mamba-HoME settings (`mamba_home`, see `stage_rule.MambaHoMERule`) come from the plans: plans naming
MambaHoMEUNet give them completely (no `preset` there means the paper preset, as nnU-Net's own
`get_network_from_plans` builds them); for stock plans the trainer's preset applies.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from torch import nn

from ..modules import MambaHoMEBlock
from .plans_encoder import instance_norm_for
from .plans_unet import PlansUNet, plans_conflict
from .stage_rule import DEFAULT_PRESET, MambaHoMERule


def _per_stage(values: Sequence[Any]) -> str:
    return "/".join(str(v) for v in values)


class MambaHoMEUNet(PlansUNet):
    """U-Net built from nnU-Net plans with Mamba-HoME encoder stages; returns nnU-Net's deep-supervision list.

    Takes the plans' arch_kwargs like `PlainConvUNet` / `ResidualEncoderUNet`, plus `mamba_home` (the
    stage-rule settings, e.g. {"preset": "light", "depth": 1}; default: the paper preset), `scan_backend` and
    `force_fp32` (see `PlansUNet`). On CUDA, calls are replayed as CUDA graphs when
    `acceleration.acceleration_mode` says so (the default).
    """

    plans_settings = (*PlansUNet.plans_settings, "mamba_home")
    replays_cuda_graphs = True  # the default on GPUs (`acceleration`): a step launches thousands of small kernels

    def __init__(self, input_channels: int, n_stages: int, *args: Any, mamba_home: Optional[Mapping[str, Any]] = None,
                 **kwargs: Any):
        # read by stage_layer, which PlansUNet.__init__ calls while building the encoder
        self.mamba_home = {"preset": DEFAULT_PRESET, **dict(mamba_home or {})}
        self.rule = MambaHoMERule.from_dict(self.mamba_home)
        self.stage_configs = self.rule.stage_configs(n_stages)
        super().__init__(input_channels, n_stages, *args, **kwargs)

    def stage_layer(self, stage: int, channels: int) -> Optional[nn.Module]:
        cfg = self.stage_configs[stage]
        if cfg is None:
            return None
        return MambaHoMEBlock(channels, cfg.depth, cfg.group_size, cfg.num_experts, cfg.slots_per_expert,
                              cfg.num_experts_second, cfg.expert_mult, cfg.d_state, cfg.d_conv, cfg.expand,
                              cfg.home_out_linear, conv_op=self.conv_op, norm_op=instance_norm_for(self.conv_op),
                              scan_backend=self.scan_backend)

    def token_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """An estimate of the token path's activations per stage, added to nnU-Net's VRAM proxy."""
        total = np.int64(0)
        size = list(input_size)
        for stride, cfg, c in zip(self.encoder.strides, self.stage_configs, self.encoder.output_channels):
            size = [i // j for i, j in zip(size, stride)]
            if cfg is not None:
                tokens = int(np.prod(size, dtype=np.int64))
                slots = cfg.num_experts * cfg.slots_per_expert
                # GSC: 8 maps of C; per depth: Mamba ~ (2 + 4*expand) C plus scan states, HoME ~ 4 C + 2 M routing
                per_token = 8 * c + cfg.depth * ((2 + 4 * cfg.expand) * c + 6 * c + 2 * slots)
                total += np.int64(tokens) * per_token
        return total

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "stage_configs": [None if c is None else asdict(c) for c in self.stage_configs]}

    def describe(self) -> str:
        """The built rule: preset and plans overrides, stages, depth, K, E, E2 per Mamba-HoME stage, backend."""
        configs = [(s, c) for s, c in enumerate(self.stage_configs) if c is not None]
        overrides = sorted(k for k in self.mamba_home if k != "preset")
        first = configs[0][1]
        return (f"MambaHoMEUNet, Mamba-HoME preset '{self.mamba_home['preset']}'"
                + (f" with {', '.join(f'{k}={self.mamba_home[k]}' for k in overrides)}" if overrides else "")
                + f": blocks on stages {[s for s, _ in configs]} of {len(self.stage_configs)} (max_token_stages "
                f"{self.rule.max_token_stages}), depth {_per_stage(c.depth for _, c in configs)}, "
                f"K {_per_stage(c.group_size for _, c in configs)}, E {_per_stage(c.num_experts for _, c in configs)}, "
                f"E2 {_per_stage(c.num_experts_second for _, c in configs)}, S {first.slots_per_expert}, "
                f"expert_mult {first.expert_mult}, scan backend {self.scan_backend or 'env/auto'}")

    @classmethod
    def settings_from_plans(cls, plans_settings: Optional[Mapping[str, Any]], preset: Optional[str] = None,
                            **wanted: Any) -> dict[str, Any]:
        """As `PlansUNet`'s, plus the Mamba-HoME settings: the plans' when they name MambaHoMEUNet (complete; a
        wanted `preset` must agree with theirs), else the wanted `preset` (default: paper)."""
        settings = super().settings_from_plans(plans_settings, **wanted)
        if plans_settings is None:
            settings["mamba_home"] = {"preset": preset or DEFAULT_PRESET}
            return settings
        planned = dict(settings.get("mamba_home") or {}).get("preset", DEFAULT_PRESET)
        if preset is not None and preset != planned:
            raise plans_conflict(
                "Mamba-HoME preset", preset, planned,
                f"train these plans with nnUNetTrainerMambaHoME (it follows the plans), or write plans for "
                f"'{preset}' with `nnunetv2-mambahome write-plans -d DATASET --preset {preset}` and train with -p")
        return settings
