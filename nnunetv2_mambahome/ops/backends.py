"""Choice of selective-scan backend: `cuda` (mamba-ssm kernels) or `torch` (pure PyTorch).

`auto` (default) picks `cuda` for CUDA tensors when the kernels import, else `torch`. The environment
variable NNUNETV2_MAMBAHOME_SCAN=auto|cuda|torch forces a choice for the whole process; a module can also be
given an explicit backend. Asking for `cuda` where it cannot run is an error that names the fix.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .cuda_kernels import INSTALL_HINT, cuda_kernels_status, load_cuda_kernels

ENV_VAR = "NNUNETV2_MAMBAHOME_SCAN"
BACKENDS = ("auto", "cuda", "torch")


class ScanBackendError(RuntimeError):
    """A requested scan backend cannot run here."""


def requested_backend(explicit: Optional[str] = None) -> str:
    """The backend asked for: the explicit argument, else the environment variable, else `auto`."""
    choice = (explicit or os.environ.get(ENV_VAR, "auto")).strip().lower()
    if choice not in BACKENDS:
        raise ScanBackendError(f"unknown scan backend {choice!r} (from {ENV_VAR} or argument); use one of {BACKENDS}")
    return choice


def resolve_backend(device: torch.device, explicit: Optional[str] = None) -> str:
    """The concrete backend (`cuda` or `torch`) for tensors on `device`."""
    choice = requested_backend(explicit)
    if choice == "torch":
        return "torch"
    usable = device.type == "cuda" and load_cuda_kernels() is not None
    if choice == "cuda" and not usable:
        why = "the tensors are not on a CUDA device" if device.type != "cuda" else cuda_kernels_status()
        raise ScanBackendError(f"scan backend 'cuda' requested but {why}; {INSTALL_HINT}")
    return "cuda" if usable else "torch"


def explain_auto_choice(device: torch.device) -> str:
    """Human-readable reason for what `auto` picks on `device` (used by `doctor`)."""
    if device.type != "cuda":
        return f"torch (device {device.type} has no compiled kernels)"
    if load_cuda_kernels() is None:
        return f"torch ({cuda_kernels_status()})"
    return f"cuda ({cuda_kernels_status()})"
