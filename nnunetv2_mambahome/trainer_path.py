"""`nnunetv2-mambahome trainer-path`: the directory nnU-Net's `nnUNet_extTrainer` must include.

nnU-Net 2.8.1 finds trainers outside its own tree only through the `nnUNet_extTrainer` environment variable
(a path list it scans at lookup time, in `nnUNetv2_train` and `nnUNetv2_predict`); it has no entry-point
discovery. So the shell needs `eval "$(nnunetv2-mambahome trainer-path --export)"` and Python code
`nnunetv2_mambahome.register()`, both of which put our directory first and keep what was there.
"""
from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Optional

ENV_VAR = "nnUNet_extTrainer"
TRAINER_DIR = Path(__file__).resolve().parent / "ext_trainers"
EXPORT_COMMAND = 'eval "$(nnunetv2-mambahome trainer-path --export)"'


def trainer_dir() -> str:
    return str(TRAINER_DIR)


def _entries(value: Optional[str]) -> list[str]:
    return [p for p in (value or "").split(os.pathsep) if p.strip()]


def ext_trainer_value(current: Optional[str] = None) -> str:
    """`nnUNet_extTrainer` with our directory in front of `current` (default: the environment's value).

    Idempotent: if our directory is already listed, `current` is returned unchanged (empty entries dropped).
    """
    entries = _entries(os.environ.get(ENV_VAR) if current is None else current)
    if trainer_dir() in (os.path.abspath(p) for p in entries):
        return os.pathsep.join(entries)
    return os.pathsep.join([trainer_dir(), *entries])


def export_line(current: Optional[str] = None) -> str:
    """The shell line `export nnUNet_extTrainer=...` that `trainer-path --export` prints."""
    return f"export {ENV_VAR}={shlex.quote(ext_trainer_value(current))}"


def register() -> str:
    """Make nnU-Net find our trainers in this process (notebooks, the Python API); returns the new value.

    Sets `os.environ["nnUNet_extTrainer"]` as the shell export does; nnU-Net reads it at every trainer lookup,
    so calling this after importing nnunetv2 is fine. Child processes started afterwards inherit it.
    """
    os.environ[ENV_VAR] = ext_trainer_value()
    return os.environ[ENV_VAR]


def ext_trainer_status() -> tuple[bool, str]:
    """Whether nnUNet_extTrainer includes our directory, and a line saying what to do if not."""
    paths = [os.path.abspath(p) for p in _entries(os.environ.get(ENV_VAR))]
    if trainer_dir() in paths:
        return True, f"{ENV_VAR} includes {trainer_dir()}"
    return False, (f"{ENV_VAR} does not include this plugin's trainers; run: {EXPORT_COMMAND} "
                   "(or nnunetv2_mambahome.register() in Python)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export", action="store_true",
                        help=f"print `export {ENV_VAR}=...` with our directory prepended to the current value "
                             "(idempotent), for eval")
    parser.epilog = f"usage: {EXPORT_COMMAND}"


def run(args: argparse.Namespace) -> int:
    print(export_line() if args.export else trainer_dir())
    return 0
