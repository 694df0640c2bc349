"""The `nnunetv2-mambahome` console command: one sub-command per tool, each in its own module.

Each sub-command module exposes `add_arguments(parser)` and `run(args) -> int`; modules are imported
lazily so that `trainer-path` and `doctor` stay fast and never import heavy optional packages.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from . import __version__
from .settings import EXIT_BAD_INPUT, InputError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("nnunetv2_mambahome.doctor", "versions, devices, the scan backend `auto` picks, nnUNet_extTrainer"),
    "trainer-path": ("nnunetv2_mambahome.trainer_path", "print the directory to export as nnUNet_extTrainer"),
    "make-dataset": ("nnunetv2_mambahome.datasets.cli", "write an offline real-data nnU-Net raw dataset"),
    "write-plans": ("nnunetv2_mambahome.plans_writer", "add a MambaHoMEUNet plans identifier to a preprocessed dataset"),
    "demo-report": ("nnunetv2_mambahome.demo_report", "Dice per class vs an untrained network, with overlay pictures"),
    "param-count": ("nnunetv2_mambahome.param_count", "print parameter counts of the paper configuration"),
    "benchmark": ("nnunetv2_mambahome.benchmark.cli", "speed/memory and accuracy comparisons against stock nnU-Net"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunetv2-mambahome", description=__doc__.splitlines()[0],
                                     epilog="also runs as `python -m nnunetv2_mambahome`")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        # Arguments are only needed for the command actually run; import just that module.
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one sub-command; without one, print the help to stderr and return 2 (a usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] not in SUBCOMMANDS:
        try:
            parser.parse_args(argv)  # -h/--help and --version exit 0, an unknown command exits 2
        except SystemExit as exc:
            return int(exc.code or 0)
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.print_help(sys.stderr)
        return 2
    name = argv[0]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"nnunetv2-mambahome {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except InputError as exc:  # bad input: one line, no traceback, argparse's exit code
        print(f"nnunetv2-mambahome {name}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT



if __name__ == "__main__":  # python -m nnunetv2_mambahome.cli, as tools/gpu scripts call it
    sys.exit(main())
