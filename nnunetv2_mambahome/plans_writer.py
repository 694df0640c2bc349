"""`nnunetv2-mambahome write-plans`: a plans identifier whose configurations use MambaHoMEUNet.

Copies an existing plans file of a preprocessed dataset (default `nnUNetPlans`, or ResEnc plans), points
every configuration's architecture (3D and 2D) at MambaHoMEUNet with a HoME preset (and optional field overrides),
and saves it under a new name. The preprocessed data is shared (same data identifiers), so
`nnUNetv2_train DATASET 3d_fullres FOLD -p <new name>` works at once, with any of our trainers or with
nnU-Net's own `nnUNetTrainer`. Every input is checked before anything is written: the settings against
`settings.MAMBA_HOME_SETTINGS` and each configuration's stages, the identifiers as plain names inside the
dataset folder; the source plans, and plans this command did not write, are never overwritten.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
from pathlib import Path
from typing import Any, Optional

from .atomic_files import replaced_atomically
from .nets.mamba_home_unet import MambaHoMEUNet
from .nets.plans_encoder import PlansNotSupportedError, conv_plan_kwargs
from .nets.stage_rule import MambaHoMERule, available_presets
from .settings import InputError, SettingError

NETWORK_CLASS = "nnunetv2_mambahome.nets.mamba_home_unet.MambaHoMEUNet"
# a plans identifier is a file name in the dataset folder and one part of nnU-Net's <Trainer>__<Plans>__<cfg>
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def convert_plans(plans: dict, preset: str, overrides: Optional[dict[str, Any]] = None,
                  plans_name: Optional[str] = None) -> dict:
    """Return a copy of `plans` with MambaHoMEUNet in every configuration that defines an architecture.

    The Mamba-HoME settings are checked now, as training would: names, types and ranges, and the per-stage
    lists and `first_stage` against each configuration's number of stages (SettingError naming the key)."""
    new = copy.deepcopy(plans)
    mamba_home = {"preset": preset, **(overrides or {})}
    rule = MambaHoMERule.from_dict(mamba_home)
    converted = []
    for name, cfg in new["configurations"].items():
        arch = cfg.get("architecture")
        if arch is None:
            continue  # inheriting configurations (e.g. 3d_cascade_fullres) take the parent's
        try:
            conv, settings = conv_plan_kwargs(arch["network_class_name"], arch["arch_kwargs"],
                                              arch.get("_kw_requires_import", ()), "MambaHoMEUNet",
                                              MambaHoMEUNet.plans_settings)
            rule.stage_configs(conv["n_stages"])
        except (PlansNotSupportedError, SettingError) as exc:
            raise InputError(f"configuration {name}: {exc}") from None
        kept = {*conv, *(settings or {})}  # drops ResEnc-only extras (block, stem/bottleneck widths)
        arch_kwargs = {k: v for k, v in arch["arch_kwargs"].items() if k in kept}
        arch_kwargs["mamba_home"] = mamba_home
        arch["network_class_name"] = NETWORK_CLASS
        arch["arch_kwargs"] = arch_kwargs
        converted.append(name)
    if not converted:
        raise InputError("the plans have no configuration with an architecture to convert")
    if plans_name:
        new["plans_name"] = plans_name
    return new


def written_by_write_plans(plans: Any) -> bool:
    """Whether a plans dict is one this command wrote (a configuration builds MambaHoMEUNet)."""
    configurations = plans.get("configurations", {}) if isinstance(plans, dict) else {}
    return any(isinstance(c, dict) and (c.get("architecture") or {}).get("network_class_name") == NETWORK_CLASS
               for c in configurations.values())


def _parse_override(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    if not key or not value:
        raise argparse.ArgumentTypeError(f"--set expects KEY=JSON, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"--set {key}: {value!r} is not JSON (numbers 2 or 0.5, true/false, null, "
                                         f"lists [1,2], text in double quotes: --set '{key}=\"...\"')") from None


def _identifier(option: str, value: str) -> str:
    """`value` if it is a plain plans identifier (no path, no `__`), else InputError naming `option`."""
    if not _IDENTIFIER.fullmatch(value) or "__" in value or value.endswith(".json"):
        raise InputError(f"{option} {value!r} is not allowed: use a plans identifier of letters, digits, '_', '-' "
                         "and '.' without '__' or '.json' (it names a file in the dataset folder and a part of "
                         "nnU-Net's <Trainer>__<Plans>__<configuration> folders)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name (e.g. 501 or Dataset501_X)")
    parser.add_argument("-p", "--source-plans", default="nnUNetPlans", help="plans identifier to start from")
    parser.add_argument("--preset", default="paper", help=f"HoME preset, one of {available_presets()}")
    parser.add_argument("--name", default=None, help="new plans identifier (default: <source>_MambaHoME_<preset>)")
    parser.add_argument("--set", dest="overrides", action="append", type=_parse_override, default=[],
                        metavar="KEY=JSON", help="override a rule field, e.g. --set depth=1 --set 'num_experts=[2,4,6,8]'")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing plans file written by write-plans (never stock plans)")


def _dataset_folder(dataset: str) -> Path:
    """$nnUNet_preprocessed/<DatasetXXX_Name> for an id or name; InputError if it is not there."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    preprocessed = os.environ.get("nnUNet_preprocessed")
    if not preprocessed:
        raise InputError("nnUNet_preprocessed is not set: export nnUNet_preprocessed=/path/to/nnUNet_preprocessed")
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as exc:
        first_sentence = str(exc).split(". ")[0].rstrip(".")
        raise InputError(f"-d {dataset}: {first_sentence} (nnUNet_preprocessed={preprocessed})") from None
    folder = Path(preprocessed) / _identifier("-d", name)
    if not folder.is_dir():
        raise InputError(f"-d {dataset}: {folder} not found: run nnUNetv2_plan_and_preprocess -d {dataset} first")
    return folder


def run(args: argparse.Namespace) -> int:
    """Check every input, convert the source plans, write them atomically; InputError (exit 2) on bad input."""
    MambaHoMERule.from_dict({"preset": args.preset, **dict(args.overrides)})  # first: the default name uses it
    source_name = _identifier("-p", args.source_plans)
    name = _identifier("--name", args.name or f"{source_name}_MambaHoME_{args.preset}")
    folder = _dataset_folder(args.dataset)
    source = folder / f"{source_name}.json"
    if not source.is_file():
        raise InputError(f"{source} not found: run nnUNetv2_plan_and_preprocess -d {args.dataset} first "
                         "(or name existing plans with -p)")
    if name == source_name:
        raise InputError(f"--name {name} is the source plans (-p) this command reads: choose another --name")
    target = folder / f"{name}.json"
    if target.exists():
        if not args.force:
            raise InputError(f"{target} exists; pass --force to overwrite it")
        try:
            ours = written_by_write_plans(json.loads(target.read_text()))
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise InputError(f"{target} was not written by write-plans (no MambaHoMEUNet configuration): --force "
                             "replaces only plans written by write-plans; choose another --name")
    try:
        source_plans = json.loads(source.read_text())
    except ValueError as exc:
        raise InputError(f"{source} is not a JSON plans file ({exc})") from None
    plans = convert_plans(source_plans, args.preset, dict(args.overrides), name)
    with replaced_atomically(target) as temporary:
        Path(temporary).write_text(json.dumps(plans, indent=2))
    print(f"wrote {target}\ntrain with: nnUNetv2_train {args.dataset} 3d_fullres FOLD -p {name} -tr nnUNetTrainerMambaHoME")
    return 0
