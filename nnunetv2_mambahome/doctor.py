"""`nnunetv2-mambahome doctor`: what is installed, every environment setting it reads, and what will fail.

Lines starting with `OK` were checked and are fine; `ACTION` lines say what will fail and how to fix it; other
lines inform. The settings shown are this plugin's (NNUNETV2_MAMBAHOME_SCAN, _TOKEN_DTYPE, _ACCEL, _NORM, _LAYOUT,
checked exactly as trainers check them at start, on this machine's device) and nnU-Net's (nnUNet_raw,
nnUNet_preprocessed, nnUNet_results, nnUNet_extTrainer, nnUNet_compile). The doctor never crashes: a check
that raises becomes an ACTION line naming it. Exit code 1 when any ACTION line was printed, else 0.
"""
from __future__ import annotations

import argparse
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

# nnU-Net's folders: variable -> what needs it
NNUNET_FOLDERS = {
    "nnUNet_raw": "raw datasets, read by nnUNetv2_plan_and_preprocess and written by make-dataset",
    "nnUNet_preprocessed": "plans and preprocessed data, read by nnUNetv2_train and write-plans",
    "nnUNet_results": "trained models, written by nnUNetv2_train and read by nnUNetv2_predict",
}
COMPILE_ON = ("true", "1", "t")  # what nnU-Net 2.8's _do_i_compile reads as on (unset: on)


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _versions() -> list[str]:
    import torch

    lines = [f"nnunetv2-mambahome {_version('nnunetv2-mambahome')}",
             f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'})"]
    return lines + [f"{dist} {_version(dist)}" for dist in
                    ("nnunetv2", "dynamic-network-architectures", "mamba-ssm", "causal-conv1d", "SimpleITK", "numpy")]


def _devices() -> list[str]:
    import torch

    from .ops.cuda_kernels import cuda_kernels_status

    if torch.cuda.is_available():
        lines = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}")
    else:
        lines = ["CUDA device: none (training runs on cpu)"]
    return lines + [f"compiled kernels: {cuda_kernels_status()}"]


def _plugin_environment() -> list[str]:
    """This plugin's variables, each checked on this machine's training device as trainers check them."""
    import torch

    from .settings import environment_settings

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lines = []
    for name, setting in environment_settings().items():
        value = os.environ.get(name)
        problem = setting.problem(device)
        if problem is not None:
            lines.append(f"ACTION {problem}")
        else:
            shown = f"{name}={value}" if value is not None else f"{name} unset (= {setting.default})"
            lines.append(f"OK {shown}: {setting.chooses}; {setting.choice(device)}")
    return lines


def _nnunet_environment() -> list[str]:
    from .trainer_path import ext_trainer_status

    lines = []
    for name, used_for in NNUNET_FOLDERS.items():
        value = os.environ.get(name)
        if not value:
            lines.append(f"ACTION {name} is not set ({used_for}): export {name}=/path/to/{name}")
        elif os.path.exists(value) and not os.path.isdir(value):
            lines.append(f"ACTION {name}={value} is not a folder ({used_for}): point it at a folder")
        else:
            lines.append(f"OK {name}={value}" + ("" if os.path.isdir(value) else " (does not exist yet; nnU-Net "
                                                                                 "creates it)"))
    ok, msg = ext_trainer_status()
    lines.append(("OK " if ok else "ACTION ") + msg)
    value = os.environ.get("nnUNet_compile")
    on = value is None or value.lower() in COMPILE_ON
    lines.append(f"nnUNet_compile={'unset' if value is None else value}: stock nnU-Net trainers "
                 f"{'compile' if on else 'do not compile'} on CUDA (unset, true, 1 or t turn it on, anything else "
                 "off); this plugin's trainers decide torch.compile themselves and say so in the training log")
    return lines


def _guarded(what: str, section: Callable[[], list[str]]) -> list[str]:
    """The section's lines, or one ACTION line if the check itself fails (the doctor never crashes)."""
    try:
        return section()
    except Exception as exc:  # noqa: BLE001 - whatever broke is what the user needs to see
        return [f"ACTION could not check {what}: {type(exc).__name__}: {exc}"]


def report() -> list[str]:
    """The doctor's lines (also used by tests)."""
    return [*_guarded("package versions", _versions), *_guarded("devices", _devices),
            *_guarded("this plugin's environment settings", _plugin_environment),
            *_guarded("nnU-Net's environment settings", _nnunet_environment)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Exit code 1 when an ACTION line is printed (something will fail), else 0."


def run(args: argparse.Namespace) -> int:
    lines = report()
    print("\n".join(lines))
    return 1 if any(line.startswith("ACTION") for line in lines) else 0
