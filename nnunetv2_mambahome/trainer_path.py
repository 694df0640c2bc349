"""`nnunetv2-mambahome trainer-path`: the directory nnU-Net's `nnUNet_extTrainer` must include."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

TRAINER_DIR = Path(__file__).resolve().parent / "ext_trainers"


def trainer_dir() -> str:
    return str(TRAINER_DIR)


def ext_trainer_status() -> tuple[bool, str]:
    """Whether nnUNet_extTrainer includes our directory, and a line saying what to do if not."""
    paths = [os.path.abspath(p) for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p.strip()]
    if trainer_dir() in paths:
        return True, f"nnUNet_extTrainer includes {trainer_dir()}"
    return False, ("nnUNet_extTrainer does not include this plugin's trainers; run: "
                   f"export nnUNet_extTrainer={trainer_dir()}" + (os.pathsep + "$nnUNet_extTrainer" if paths else ""))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "usage: export nnUNet_extTrainer=$(nnunetv2-mambahome trainer-path)"


def run(args: argparse.Namespace) -> int:
    print(trainer_dir())
    return 0
