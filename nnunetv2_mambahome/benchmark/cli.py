"""`nnunetv2-mambahome benchmark`: `speed` (time, memory, parameters, inference) and `accuracy` (Dice, HD95, NSD)."""
from __future__ import annotations

import argparse
import importlib

# name -> (module with add_arguments/run, one-line help); imported only when that sub-command runs
BENCHMARKS: dict[str, tuple[str, str]] = {
    "speed": ("nnunetv2_mambahome.benchmark.speed",
              "training-step time, peak memory, parameters and inference time against stock nnU-Net"),
    "accuracy": ("nnunetv2_mambahome.benchmark.accuracy",
                 "per-case Dice / HD95 / NSD of prediction sets with a paired test"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-parser per benchmark, each filled by its module's add_arguments."""
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module_name).add_arguments(p)
        p.set_defaults(_benchmark_module=module_name)


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark."""
    return int(importlib.import_module(args._benchmark_module).run(args) or 0)
