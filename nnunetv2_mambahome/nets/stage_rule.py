"""Which encoder stages get Mamba-HoME blocks, and with what HoME sizes: the paper's rule for any plan.

The paper uses 4 token stages (1/2 .. 1/16 resolution) with group size K = 2048, 1024, 512, 256, first-level
experts E = 4, 8, 12, 16, S = 4 slots per expert and E2 = 2E second-level experts; its 1/32 bottleneck is
convolutional. For an nnU-Net plan with n stages (stage 0 = full resolution), stages `first_stage` ..
min(n, first_stage + max_token_stages) - 1 get blocks; the t-th of them (t = 0, 1, ...) uses
K_t = max(min_group_size, round(group_size_first * group_size_factor^t)),
E_t = experts_first + t * experts_step, E2_t = second_level_factor * E_t. Stage 0 stays convolutional, like
the paper's stem, and so do stages beyond the 4th token stage, like its bottleneck (max_token_stages=None
puts blocks on every deeper stage). Every field can be set from the plans' `arch_kwargs["mamba_home"]`,
including explicit per-stage lists (`depths`, `group_sizes`, `num_experts`, `num_experts_second`) that
replace the rule.
Presets (plans/*.json, shipped as `nnunetv2_mambahome.presets`) are named sets of these fields. What each
field allows (type, range) is `settings.MAMBA_HOME_SETTINGS`; a rule is checked against it when built, and the
per-stage lists against the plan's stages in `stage_configs`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from importlib import resources
from typing import Any, Mapping, Optional

from ..settings import PRESET_METADATA, SettingError, check_mamba_home, show

# the preset MambaHoMERule's field defaults are, and the one a network gets when nothing names another
DEFAULT_PRESET = "paper"


@dataclass(frozen=True)
class StageConfig:
    """Settings of the Mamba-HoME block of one encoder stage."""

    depth: int
    group_size: int
    num_experts: int
    slots_per_expert: int
    num_experts_second: int
    expert_mult: float
    d_state: int
    d_conv: int
    expand: int
    home_out_linear: bool


@dataclass(frozen=True)
class MambaHoMERule:
    """The rule's parameters (defaults = the paper preset)."""

    first_stage: int = 1
    max_token_stages: Optional[int] = 4
    depth: int = 2
    group_size_first: int = 2048
    group_size_factor: float = 0.5
    min_group_size: int = 16
    experts_first: int = 4
    experts_step: int = 4
    slots_per_expert: int = 4
    second_level_factor: int = 2
    expert_mult: float = 2.0
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    home_out_linear: bool = True
    depths: Optional[tuple[int, ...]] = None
    group_sizes: Optional[tuple[int, ...]] = None
    num_experts: Optional[tuple[int, ...]] = None
    num_experts_second: Optional[tuple[int, ...]] = None

    def __post_init__(self) -> None:
        # every field against its schema, also for rules built directly; lists become tuples, numbers floats
        for key, value in check_mamba_home({f.name: getattr(self, f.name) for f in fields(self)}).items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_dict(cls, settings: Optional[Mapping[str, Any]]) -> "MambaHoMERule":
        """Build from a plans/preset dict; `preset` names a base preset, other keys override it.

        Unknown keys and values outside `settings.MAMBA_HOME_SETTINGS` raise SettingError (one line)."""
        if settings is not None and not isinstance(settings, Mapping):
            raise SettingError(f"mamba_home={show(settings)} is not allowed: use a JSON object of settings, "
                               'e.g. {"preset": "light", "depth": 1}')
        settings = dict(settings or {})
        base = load_preset(settings.pop("preset")) if "preset" in settings else {}
        merged = {k: v for k, v in {**base, **settings}.items() if k not in PRESET_METADATA}
        return cls(**check_mamba_home(merged))

    def to_dict(self) -> dict[str, Any]:
        # None means "from the rule" for the per-stage lists, but "no limit" for max_token_stages: keep that one
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if v is not None or k == "max_token_stages"}

    def stage_configs(self, n_stages: int) -> list[Optional[StageConfig]]:
        """One entry per encoder stage: None for convolution-only stages, else its StageConfig."""
        if not self.first_stage < n_stages:
            raise SettingError(f"mamba_home.first_stage={self.first_stage} is not allowed for a {n_stages}-stage plan: "
                               f"use 0..{n_stages - 1}")
        n_token = n_stages - self.first_stage
        if self.max_token_stages is not None:
            n_token = min(n_token, self.max_token_stages)
        per_stage = {
            "depths": self.depths or (self.depth,) * n_token,
            "group_sizes": self.group_sizes or tuple(
                max(self.min_group_size, int(round(self.group_size_first * self.group_size_factor ** t)))
                for t in range(n_token)),
            "num_experts": self.num_experts or tuple(self.experts_first + t * self.experts_step for t in range(n_token)),
        }
        per_stage["num_experts_second"] = self.num_experts_second or tuple(
            self.second_level_factor * e for e in per_stage["num_experts"])
        for key, values in per_stage.items():
            if len(values) != n_token:
                raise SettingError(f"mamba_home.{key} has {len(values)} entries but the plan has {n_token} Mamba-HoME "
                                   f"stages (stages {self.first_stage}..{self.first_stage + n_token - 1}; "
                                   f"max_token_stages={self.max_token_stages} sets how many)")
        configs: list[Optional[StageConfig]] = [None] * self.first_stage
        for t in range(n_token):
            configs.append(StageConfig(per_stage["depths"][t], per_stage["group_sizes"][t], per_stage["num_experts"][t],
                                       self.slots_per_expert, per_stage["num_experts_second"][t], self.expert_mult,
                                       self.d_state, self.d_conv, self.expand, self.home_out_linear))
        return configs + [None] * (n_stages - len(configs))


def available_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("nnunetv2_mambahome.presets").iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> dict[str, Any]:
    """The JSON preset `name` (paper, light, large, ...)."""
    if name not in available_presets():  # also keeps a name like "../x" inside the presets folder
        raise SettingError(f"unknown Mamba-HoME preset mamba_home.preset={show(name)}; available: {available_presets()}")
    return json.loads(resources.files("nnunetv2_mambahome.presets").joinpath(f"{name}.json").read_text())
