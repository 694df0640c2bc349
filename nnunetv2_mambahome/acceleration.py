"""How our networks remove the CPU launch overhead on GPUs: the one place that decides it.

`acceleration_mode(device)` is one of
- `graphs` (default on CUDA): every fixed-shape forward/backward is replayed as CUDA graphs (`cuda_graphs`);
- `compile`: nnU-Net's own torch.compile of the network (the scan kernels are custom ops, so it traces);
- `eager`: neither.
nnU-Net's switch `nnUNet_compile` stays the master switch: set to false it means eager, as for stock nnU-Net.
NNUNETV2_MAMBAHOME_ACCEL=auto|graphs|compile|eager chooses among them (auto = graphs). CPUs always run eager,
and so do multi-process (DDP) runs: graph replay under DistributedDataParallel has not been verified on a
multi-GPU machine yet, so it is not switched on there. `auto` also keeps networks whose scan runs on a backend
without verified graph replay (the pure-PyTorch `torch` scan on a GPU) eager; NNUNETV2_MAMBAHOME_ACCEL=graphs
still forces them. (Capture had failed inside `benchmark speed` with the Triton scan: the cause was cuDNN
autotuning inside the capture, not the scan, and `cuda_graphs` now autotunes before capturing.)
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .ops import resolve_backend
from .settings import env_choice

ACCEL_ENV = "NNUNETV2_MAMBAHOME_ACCEL"
MODES = ("auto", "graphs", "compile", "eager")
# scan backends whose graph replay was verified inside nnU-Net's train_step
GRAPH_VERIFIED_BACKENDS = ("cuda", "triton")


class AccelerationError(ValueError):
    """A bad value of NNUNETV2_MAMBAHOME_ACCEL."""


def requested_mode() -> str:
    """The environment's request: auto, graphs, compile or eager."""
    return env_choice(ACCEL_ENV, MODES, AccelerationError)


def nnunet_compile_disabled() -> bool:
    """nnU-Net's own switch set to false (unset means on, as in nnU-Net 2.8)."""
    return os.environ.get("nnUNet_compile", "t").strip().lower() not in ("true", "1", "t")


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and \
        torch.distributed.get_world_size() > 1


def _eager_reason(device: torch.device, scan_backend: Optional[str]) -> Optional[str]:
    """Why a network on `device` runs eagerly, or None when it may use graphs/compile."""
    requested = requested_mode()
    if torch.device(device).type != "cuda":
        return "CPU"
    if nnunet_compile_disabled():
        return "nnUNet_compile=f"
    if requested == "eager":
        return f"{ACCEL_ENV}=eager"
    if requested == "compile":
        return None
    if _distributed():
        return "DDP (graphs not verified there)"
    backend = resolve_backend(device, scan_backend).name
    if requested == "auto" and backend not in GRAPH_VERIFIED_BACKENDS:
        return f"scan backend {backend}: graphs not verified with it inside nnU-Net's training step"
    return None


def acceleration_mode(device: torch.device, scan_backend: Optional[str] = None) -> str:
    """graphs, compile or eager for a network on `device` whose mixers use `scan_backend` (None: the
    environment's / auto); see the module docstring."""
    if _eager_reason(device, scan_backend) is not None:
        return "eager"
    return "compile" if requested_mode() == "compile" else "graphs"


def describe_acceleration(device: torch.device, scan_backend: Optional[str] = None) -> str:
    """One line for training logs."""
    why = _eager_reason(device, scan_backend)
    if why is not None:
        return f"eager ({why})"
    if requested_mode() == "compile":
        return "torch.compile (nnU-Net's)"
    return "CUDA graphs (captured after 2 eager calls per input shape)"
