"""Every setting this plugin reads, what each allows, and the checks that turn a bad value into one line.

Settings enter in three places and are checked there, against the schema in this module:
- the plans' `arch_kwargs["mamba_home"]` and `write-plans --preset/--set` (the stage rule's fields,
  `MAMBA_HOME_SETTINGS`; checked by `MambaHoMERule`, list lengths against the plan's stages by
  `MambaHoMERule.stage_configs`);
- the environment (`environment_settings()`: NNUNETV2_MAMBAHOME_SCAN, _TOKEN_DTYPE, _ACCEL, _NORM, _LAYOUT;
  their allowed values are owned by `ops`, `precision`, `acceleration`, `modules.instance_norm` and
  `nets.layout`, which this module asks), checked at trainer start and by `doctor`;
- the command line (argparse types below, and each command's own checks before any expensive work).
A bad value raises `InputError` (a `SettingError` for schema values): one line naming the key, the value
and what is allowed. The `nnunetv2-mambahome` commands print it without a traceback and exit with
`EXIT_BAD_INPUT`, the code argparse uses for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

if TYPE_CHECKING:  # torch, ops and precision are imported only where the environment is checked, so that
    import torch  # the console command starts without torch (`trainer-path` runs inside `export` lines)

EXIT_BAD_INPUT = 2


class InputError(ValueError):
    """Bad user input. Commands print the message as one line (no traceback) and exit with EXIT_BAD_INPUT."""


class SettingError(InputError):
    """A setting whose value is outside its schema."""


def env_choice(name: str, choices: Sequence[str], error: type[Exception] = ValueError) -> str:
    """Environment variable `name` trimmed and lower-cased, `auto` when unset or empty; `error` naming the
    allowed `choices` otherwise (the plugin's choice variables: _ACCEL, _NORM, _LAYOUT)."""
    value = os.environ.get(name, "auto").strip().lower() or "auto"
    if value not in choices:
        raise error(f"{name}={value!r}: use one of {', '.join(choices)}")
    return value


def show(value: Any) -> str:
    """A value as the user wrote it (JSON, so strings keep their quotes and None reads null)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


@dataclass(frozen=True)
class Setting:
    """Type and range of one setting: `kind` int, float or bool; per-stage settings are lists of that kind."""

    kind: type
    minimum: Optional[float] = None
    exclusive_minimum: bool = False  # True: value > minimum, else value >= minimum
    nullable: bool = False
    null_means: str = ""
    per_stage: bool = False

    def allowed(self) -> str:
        """What the setting allows, in words (used in the error message)."""
        if self.kind is bool:
            text = "true or false"
        else:
            noun = "integer" if self.kind is int else "number"
            if (self.kind is int and self.minimum == 1) or (self.minimum == 0 and self.exclusive_minimum):
                noun = f"positive {noun}"
            elif self.minimum is not None:
                noun = f"{noun} {'>' if self.exclusive_minimum else '>='} {self.minimum:g}"
            text = f"a list of {noun}s, one per Mamba-HoME stage" if self.per_stage else \
                f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
        return text + (f", or null ({self.null_means})" if self.nullable else "")

    def check(self, key: str, value: Any) -> Any:
        """`value` in its canonical form (tuple for lists, float for numbers); SettingError if not allowed."""
        if value is None and self.nullable:
            return None
        if self.per_stage:
            if isinstance(value, (list, tuple)) and value and all(self._ok(v) for v in value):
                return tuple(self._canonical(v) for v in value)
        elif self._ok(value):
            return self._canonical(value)
        raise SettingError(f"mamba_home.{key}={show(value)} is not allowed: use {self.allowed()}")

    def _ok(self, value: Any) -> bool:
        if self.kind is bool:
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            return False  # JSON true/false are not numbers here, nor is 2.0 an integer
        if not math.isfinite(value):
            return False
        if self.minimum is None:
            return True
        return value > self.minimum if self.exclusive_minimum else value >= self.minimum

    def _canonical(self, value: Any) -> Any:
        return float(value) if self.kind is float else value


# The stage rule's fields (nets/stage_rule.py: MambaHoMERule, whose defaults are the paper preset).
MAMBA_HOME_SETTINGS: dict[str, Setting] = {
    "first_stage": Setting(int, 0),  # upper bound: the plan's number of stages, checked by stage_configs
    "max_token_stages": Setting(int, 1, nullable=True, null_means="blocks on every stage from first_stage on"),
    "depth": Setting(int, 1),
    "group_size_first": Setting(int, 1),
    "group_size_factor": Setting(float, 0, exclusive_minimum=True),
    "min_group_size": Setting(int, 1),
    "experts_first": Setting(int, 1),
    "experts_step": Setting(int, 0),
    "slots_per_expert": Setting(int, 1),
    "second_level_factor": Setting(int, 1),
    "expert_mult": Setting(float, 0, exclusive_minimum=True),
    "d_state": Setting(int, 1),
    "d_conv": Setting(int, 1),
    "expand": Setting(int, 1),
    "home_out_linear": Setting(bool),
    **{key: Setting(int, 1, nullable=True, null_means="from the rule", per_stage=True)
       for key in ("depths", "group_sizes", "num_experts", "num_experts_second")},
}
# Keys a preset file may carry besides the rule's fields (they describe the preset, they set nothing).
PRESET_METADATA = ("name", "description")


def check_mamba_home(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every entry of `values` checked against MAMBA_HOME_SETTINGS, in canonical form; unknown keys are an error."""
    unknown = sorted(set(values) - set(MAMBA_HOME_SETTINGS))
    if unknown:
        raise SettingError(f"unknown Mamba-HoME setting(s) {unknown}; known: {', '.join(sorted(MAMBA_HOME_SETTINGS))}")
    return {key: MAMBA_HOME_SETTINGS[key].check(key, value) for key, value in values.items()}


# ---------------------------------------------------------------------------------------------- environment

def _scan_problem(device: torch.device) -> Optional[str]:
    """Why NNUNETV2_MAMBAHOME_SCAN cannot run on `device`, or None (`ops` owns the backends and their names)."""
    from .ops import ENV_VAR, ScanBackendError, requested_backend, resolve_backend

    try:
        requested_backend()  # an unknown name
        resolve_backend(device)  # a backend that cannot run here, e.g. cuda on a CPU
    except ScanBackendError as exc:
        return (f"{ENV_VAR}={os.environ.get(ENV_VAR)!r} cannot be used on {device.type}: {exc}; "
                f"unset {ENV_VAR} to let `auto` choose")
    return None


def _token_dtype_problem(device: torch.device) -> Optional[str]:
    """Why NNUNETV2_MAMBAHOME_TOKEN_DTYPE cannot be used on `device`, or None (`precision` owns its values)."""
    from .precision import autocast_token_dtype, validate_token_dtype_env

    try:
        validate_token_dtype_env()  # on every device, also where no autocast ever reads it (CPU)
        if device.type == "cuda":
            autocast_token_dtype(device)  # bfloat16 forced on a GPU without it
    except (ValueError, RuntimeError) as exc:
        return str(exc)
    return None


def _scan_choice(device: torch.device) -> str:
    from .ops import explain_auto_choice, resolve_backend

    return f"runs {resolve_backend(device).name} on {device.type}; auto picks {explain_auto_choice(device)}"


def _token_dtype_choice(device: torch.device) -> str:
    from .precision import autocast_token_dtype

    if device.type != "cuda":
        return f"nnU-Net autocasts on CUDA only, so training on {device.type} runs the token path in float32"
    return f"token path under autocast on cuda: {str(autocast_token_dtype(device)).replace('torch.', '')}"


def _accel_problem(device: torch.device) -> Optional[str]:
    """Why NNUNETV2_MAMBAHOME_ACCEL is unusable, or None (`acceleration` owns its values)."""
    from .acceleration import AccelerationError, requested_mode

    try:
        requested_mode()
    except AccelerationError as exc:
        return str(exc)
    return None


def _accel_choice(device: torch.device) -> str:
    from .acceleration import describe_acceleration

    return f"on {device.type}: {describe_acceleration(device)}"


def _norm_problem(device: torch.device) -> Optional[str]:
    """Why NNUNETV2_MAMBAHOME_NORM is unusable on `device`, or None (`modules.instance_norm` owns its values)."""
    from .modules.instance_norm import triton_norm_problem

    return triton_norm_problem(device)


def _norm_choice(device: torch.device) -> str:
    from .modules.instance_norm import requested_norm, resolved_norm

    choice, resolved = requested_norm(), resolved_norm()
    if resolved == "triton" and device.type != "cuda":
        return f"{choice}: triton; on {device.type} the norms run PyTorch's kernels"
    return f"{choice}: {resolved} instance norms and DyT on {device.type}"


def _layout_problem(device: torch.device) -> Optional[str]:
    """Why NNUNETV2_MAMBAHOME_LAYOUT is unusable, or None (`nets.layout` owns its values)."""
    from .nets.layout import requested_layout

    try:
        requested_layout()
    except ValueError as exc:
        return str(exc)
    return None


def _layout_choice(device: torch.device) -> str:
    from .nets.layout import requested_layout, resolved_layout

    return f"{requested_layout()}: {resolved_layout().replace('_', '-')} activations"


@dataclass(frozen=True)
class EnvironmentSetting:
    """One environment variable of this plugin: its value when unset, what it chooses, and two checks on a device."""

    default: str
    chooses: str
    problem: Callable[[torch.device], Optional[str]]  # None, or one line: what will fail and how to fix it
    choice: Callable[[torch.device], str]  # what it resolves to on the device (only asked when problem is None)


def environment_settings() -> dict[str, EnvironmentSetting]:
    """This plugin's environment variables by name (the names are owned by `ops` and `precision`)."""
    from .acceleration import ACCEL_ENV
    from .modules.instance_norm import NORM_ENV
    from .nets.layout import LAYOUT_ENV
    from .ops import ENV_VAR
    from .precision import TOKEN_DTYPE_ENV

    return {ENV_VAR: EnvironmentSetting("auto", "selective-scan backend", _scan_problem, _scan_choice),
            TOKEN_DTYPE_ENV: EnvironmentSetting("auto", "token-path dtype under autocast", _token_dtype_problem,
                                                _token_dtype_choice),
            ACCEL_ENV: EnvironmentSetting("auto", "CUDA graphs / torch.compile / eager on GPUs", _accel_problem,
                                          _accel_choice),
            NORM_ENV: EnvironmentSetting("auto", "instance norm and DyT kernels on GPUs",
                                         _norm_problem, _norm_choice),
            LAYOUT_ENV: EnvironmentSetting("auto", "memory layout of the conv path's activations",
                                           _layout_problem, _layout_choice)}


def environment_problems(device: torch.device) -> list[str]:
    """One line per environment setting of this plugin that cannot be used on `device`."""
    return [line for setting in environment_settings().values() if (line := setting.problem(device)) is not None]


def check_environment(device: torch.device) -> None:
    """SettingError listing every `environment_problems(device)`; trainers call it before any work starts."""
    problems = environment_problems(device)
    if problems:
        raise SettingError("; ".join(problems))


# ---------------------------------------------------------------------------------------------- command line

def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`, else argparse's one-line error (exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: use an integer >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def check_device(text: str, option: str = "--device") -> torch.device:
    """A device option as a torch.device: cpu, cuda or cuda:N of a GPU torch sees; InputError otherwise."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InputError(f"{option} {text!r} is not allowed: use cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if device.type == "cuda" and torch.cuda.is_available() else 0
    if device.type == "cuda" and not count:
        raise InputError(f"{option} {text}: torch sees no CUDA device here; use {option} cpu")
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise InputError(f"{option} {text}: torch sees {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return device
