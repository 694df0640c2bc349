"""`nnunetv2-mambahome param-count`: parameter counts of the paper configuration, per part.

Two columns: the released code (no Linear after HoME, 170,128,101 parameters with 13 classes) and paper
eq. 10 (one Linear(d, d) after every HoME, 170,521,221 = the paper's 170.5M). The network is built on the
`meta` device, so nothing is allocated.
"""
from __future__ import annotations

import argparse
import re

import torch

from .nets.paper_net import PAPER_CONFIG, MambaHoMEPaperNet
from .settings import int_at_least

# (part, regex on parameter names of MambaHoMEPaperNet); every parameter falls in exactly one part.
PARTS: list[tuple[str, str]] = [
    ("stem + 3 downsamples", r"^encoder\.downsamples\."),
    ("GSC x4", r"^encoder\.stages\.\d+\.gsc\."),
    ("Mamba layers (incl. their DyT)", r"^encoder\.stages\.\d+\.mamba_layers\."),
    ("HoME layers", r"^encoder\.stages\.\d+\.home_layers\.\d+\.home\."),
    ("DyT before HoME", r"^encoder\.stages\.\d+\.home_layers\.\d+\.norm\."),
    ("Linear after HoME (eq. 10)", r"^encoder\.stages\.\d+\.home_layers\.\d+\.out_linear\."),
    ("UNETR encoders (encoder1..5)", r"^skip_blocks\."),
    ("decoders (decoder5..1)", r"^decoder\.(up_blocks|final_block)\."),
    ("head (1x1 conv)", r"^decoder\.seg_layers\."),
]


def count_parts(network: MambaHoMEPaperNet) -> dict[str, int]:
    """Parameters per part of `PARTS`, plus "total"."""
    counts = {name: 0 for name, _ in PARTS}
    for key, param in network.named_parameters():
        parts = [name for name, pattern in PARTS if re.search(pattern, key)]
        if len(parts) != 1:
            raise RuntimeError(f"parameter {key} matches parts {parts}; PARTS must partition the network")
        counts[parts[0]] += param.numel()
    counts["total"] = sum(counts.values())
    return counts


def paper_parameter_counts(classes: int = 13, in_channels: int = 1, home_out_linear: bool = False) -> dict[str, int]:
    """`count_parts` of the paper configuration, built on the meta device."""
    kwargs = {**PAPER_CONFIG, "in_chans": in_channels, "out_chans": classes}
    with torch.device("meta"):
        return count_parts(MambaHoMEPaperNet(**kwargs, home_out_linear=home_out_linear))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", type=int_at_least(1), default=13,
                        help="output classes incl. background (default: 13)")
    parser.add_argument("--in-channels", type=int_at_least(1), default=1, help="input channels (default: 1)")


def run(args: argparse.Namespace) -> int:
    code = paper_parameter_counts(args.classes, args.in_channels, home_out_linear=False)
    paper = paper_parameter_counts(args.classes, args.in_channels, home_out_linear=True)
    print(f"Mamba-HoME paper configuration, {args.in_channels} input channel(s), {args.classes} classes")
    print(f"{'part':<32}{'code (no Linear)':>20}{'eq. 10 (Linear)':>20}")
    for name in code:
        print(f"{name:<32}{code[name]:>20,}{paper[name]:>20,}")
    return 0
