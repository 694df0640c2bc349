"""How our networks remove the CPU launch overhead on GPUs: the one place that decides it.

`acceleration_mode(device)` is one of
- `graphs` (default on CUDA): every fixed-shape forward/backward is replayed as CUDA graphs (`cuda_graphs`);
- `compile`: nnU-Net's own torch.compile of the network (the scan kernels are custom ops, so it traces);
- `eager`: neither.
nnU-Net's switch `nnUNet_compile` stays the master switch: set to false it means eager, as for stock nnU-Net.
NNUNETV2_MAMBAHOME_ACCEL=auto|graphs|compile|eager chooses among them (auto = graphs). CPUs always run eager,
and so do multi-process (DDP) runs: graph replay under DistributedDataParallel has not been verified on a
multi-GPU machine yet, so it is not switched on there.
"""
from __future__ import annotations

import os

import torch

ACCEL_ENV = "NNUNETV2_MAMBAHOME_ACCEL"
MODES = ("auto", "graphs", "compile", "eager")


class AccelerationError(ValueError):
    """A bad value of NNUNETV2_MAMBAHOME_ACCEL."""


def requested_mode() -> str:
    """The environment's request: auto, graphs, compile or eager."""
    value = os.environ.get(ACCEL_ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise AccelerationError(f"{ACCEL_ENV}={value!r}: use one of {', '.join(MODES)}")
    return value


def nnunet_compile_disabled() -> bool:
    """nnU-Net's own switch set to false (unset means on, as in nnU-Net 2.8)."""
    return os.environ.get("nnUNet_compile", "t").strip().lower() not in ("true", "1", "t")


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and \
        torch.distributed.get_world_size() > 1


def acceleration_mode(device: torch.device) -> str:
    """graphs, compile or eager for a network running on `device` now (see the module docstring)."""
    requested = requested_mode()
    if torch.device(device).type != "cuda" or nnunet_compile_disabled() or requested == "eager":
        return "eager"
    if requested == "compile":
        return "compile"
    return "eager" if _distributed() else "graphs"


def describe_acceleration(device: torch.device) -> str:
    """One line for training logs."""
    mode = acceleration_mode(device)
    if mode == "graphs":
        return "CUDA graphs (captured after 2 eager calls per input shape)"
    if mode == "compile":
        return "torch.compile (nnU-Net's)"
    why = ("CPU" if torch.device(device).type != "cuda" else "nnUNet_compile=f" if nnunet_compile_disabled()
           else f"{ACCEL_ENV}=eager" if requested_mode() == "eager" else "DDP (graphs not verified there)")
    return f"eager ({why})"
