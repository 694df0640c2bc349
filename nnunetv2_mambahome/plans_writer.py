"""`nnunetv2-mambahome write-plans`: a plans identifier whose 3D configurations use MambaHoMEUNet.

Copies an existing plans file of a preprocessed dataset (default `nnUNetPlans`, or ResEnc plans), points
every 3D configuration's architecture at MambaHoMEUNet with a HoME preset (and optional field overrides),
and saves it under a new name. The preprocessed data is shared (same data identifiers), so
`nnUNetv2_train DATASET 3d_fullres FOLD -p <new name>` works at once, with any of our trainers or with
nnU-Net's own `nnUNetTrainer`.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path
from typing import Any, Optional

from .nets.from_plans import mamba_home_unet_kwargs
from .nets.stage_rule import MambaHoMERule, available_presets

NETWORK_CLASS = "nnunetv2_mambahome.nets.mamba_home_unet.MambaHoMEUNet"


def convert_plans(plans: dict, preset: str, overrides: Optional[dict[str, Any]] = None,
                  plans_name: Optional[str] = None) -> dict:
    """Return a copy of `plans` with MambaHoMEUNet in every 3D configuration that defines an architecture."""
    new = copy.deepcopy(plans)
    mamba_home = {"preset": preset, **(overrides or {})}
    MambaHoMERule.from_dict(mamba_home)  # validate names and values now, not at training time
    converted = []
    for name, cfg in new["configurations"].items():
        arch = cfg.get("architecture")
        if arch is None or len(cfg.get("patch_size", [])) != 3:
            continue  # inheriting configurations (e.g. 3d_cascade_fullres) take the parent's; 2D stays stock
        kwargs = mamba_home_unet_kwargs(arch["network_class_name"], arch["arch_kwargs"],
                                        arch.get("_kw_requires_import", ()), preset)
        arch_kwargs = dict(arch["arch_kwargs"])
        arch_kwargs = {k: v for k, v in arch_kwargs.items() if k in kwargs}  # drop ResEnc-only extras
        arch_kwargs["mamba_home"] = mamba_home
        arch["network_class_name"] = NETWORK_CLASS
        arch["arch_kwargs"] = arch_kwargs
        converted.append(name)
    if not converted:
        raise ValueError("the plans have no 3D configuration with an architecture to convert")
    if plans_name:
        new["plans_name"] = plans_name
    return new


def _parse_override(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    if not key or not value:
        raise argparse.ArgumentTypeError(f"--set expects key=value, got {text!r}")
    return key, json.loads(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name (e.g. 501 or Dataset501_X)")
    parser.add_argument("-p", "--source-plans", default="nnUNetPlans", help="plans identifier to start from")
    parser.add_argument("--preset", default="paper", help=f"HoME preset, one of {available_presets()}")
    parser.add_argument("--name", default=None, help="new plans identifier (default: <source>_MambaHoME_<preset>)")
    parser.add_argument("--set", dest="overrides", action="append", type=_parse_override, default=[],
                        metavar="KEY=JSON", help="override a rule field, e.g. --set depth=1 --set 'num_experts=[2,4,6,8]'")
    parser.add_argument("--force", action="store_true", help="overwrite an existing plans file")


def run(args: argparse.Namespace) -> int:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    preprocessed = os.environ.get("nnUNet_preprocessed")
    if not preprocessed:
        raise SystemExit("nnUNet_preprocessed is not set")
    folder = Path(preprocessed) / maybe_convert_to_dataset_name(args.dataset)
    source = folder / f"{args.source_plans}.json"
    if not source.is_file():
        raise SystemExit(f"{source} not found: run nnUNetv2_plan_and_preprocess -d {args.dataset} first")
    name = args.name or f"{args.source_plans}_MambaHoME_{args.preset}"
    target = folder / f"{name}.json"
    if target.exists() and not args.force:
        raise SystemExit(f"{target} exists; pass --force to overwrite")
    plans = convert_plans(json.loads(source.read_text()), args.preset, dict(args.overrides), name)
    target.write_text(json.dumps(plans, indent=2))
    print(f"wrote {target}\ntrain with: nnUNetv2_train {args.dataset} 3d_fullres FOLD -p {name} -tr nnUNetTrainerMambaHoME")
    return 0
