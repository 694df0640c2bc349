"""`nnunetv2-mambahome doctor`: what is installed, which scan backend `auto` picks and why, trainer lookup."""
from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def report() -> list[str]:
    """The doctor's lines (also used by tests)."""
    import torch

    from .ops import ENV_VAR, explain_auto_choice, requested_backend
    from .ops.cuda_kernels import cuda_kernels_status
    from .trainer_path import ext_trainer_status

    lines = [f"nnunetv2-mambahome {_version('nnunetv2-mambahome')}",
             f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'})"]
    for dist in ("nnunetv2", "dynamic-network-architectures", "mamba-ssm", "causal-conv1d", "SimpleITK", "numpy"):
        lines.append(f"{dist} {_version(dist)}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}")
        device = torch.device("cuda")
    else:
        lines.append("CUDA device: none")
        device = torch.device("cpu")
    lines.append(f"compiled kernels: {cuda_kernels_status()}")
    lines.append(f"scan backend requested: {requested_backend()} ({ENV_VAR})")
    lines.append(f"scan backend auto picks on {device.type}: {explain_auto_choice(device)}")
    ok, msg = ext_trainer_status()
    lines.append(("OK " if ok else "ACTION ") + msg)
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("\n".join(report()))
    return 0
