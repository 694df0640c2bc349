"""Choice of selective-scan backend, resolved once per (device, request) to its implementation.

- `triton`: our Triton scan and conv (`selective_scan_triton`, `causal_conv1d_triton`) in the fused mixer body.
  Needs only the Triton that CUDA builds of PyTorch ship; no compilation step.
- `cuda`: mamba-ssm's compiled `selective_scan_cuda` (+ causal-conv1d's conv, else the Triton conv) in the same
  fused body.
- `torch`: the pure-PyTorch chunked scan in the unfused body (CPUs, or GPUs where neither of the above runs).

`auto` (default) takes, on a CUDA device, the first of `AUTO_ORDER` that runs there (measured fastest first:
docs/BENCHMARKS.md), else `torch`; on a CPU, `torch`. Before `auto` relies on Triton it runs a tiny scan on the
device and compares it with `selective_scan_ref`, so a GPU or Triton that cannot compile the kernels falls back
to the next backend, and the reason is part of `ScanBackend.reason` (the training log prints it). The
environment variable NNUNETV2_MAMBAHOME_SCAN=auto|cuda|triton|torch forces a choice for the whole process; a
module can also be given an explicit one. Asking for a backend that cannot run is an error naming the fix.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch

from .conv_ops import ConvKernel
from .cuda_kernels import INSTALL_HINT, causal_conv1d_cuda, cuda_kernels_status, load_cuda_kernels, selective_scan_cuda
from .mamba_inner import mamba_inner_fused, mamba_inner_unfused
from .selective_scan_chunked import selective_scan_chunked

ENV_VAR = "NNUNETV2_MAMBAHOME_SCAN"
BACKENDS = ("auto", "cuda", "triton", "torch")
AUTO_ORDER = ("cuda", "triton")  # on CUDA devices, fastest first by measurement; `torch` comes last
MIN_TRITON = (3, 0)  # tl.associative_scan(reverse=...) and the interpreter features the kernels use


class ScanBackendError(RuntimeError):
    """A requested scan backend cannot run here."""


@dataclass(frozen=True)
class ScanBackend:
    """A resolved backend: its name, why it was chosen, the differentiable scan and the mixer body.

    `mamba_inner(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, out_proj_weight,
    out_proj_bias, A, D)` -> (batch, L, d_model); `selective_scan` has `selective_scan_ref`'s signature."""

    name: str
    reason: str
    selective_scan: Callable
    mamba_inner: Callable


def requested_backend(explicit: Optional[str] = None) -> str:
    """The backend asked for: the explicit argument, else the environment variable, else `auto`."""
    choice = (explicit or os.environ.get(ENV_VAR, "auto")).strip().lower() or "auto"
    if choice not in BACKENDS:
        raise ScanBackendError(f"unknown scan backend {choice!r} (from {ENV_VAR} or argument); use one of "
                               f"{', '.join(BACKENDS)}")
    return choice


_RESOLVED: dict[tuple, ScanBackend] = {}


def resolve_backend(device: torch.device, explicit: Optional[str] = None) -> ScanBackend:
    """The backend for tensors on `device` (cached: every later call with the same request is a dict lookup)."""
    choice = requested_backend(explicit)
    device = _normalised(device)
    key = (device.type, device.index, choice, os.environ.get("TRITON_INTERPRET"))
    if key not in _RESOLVED:
        _RESOLVED[key] = _resolve(device, choice)
    return _RESOLVED[key]


def explain_auto_choice(device: torch.device) -> str:
    """What `auto` picks on `device` and why (for `doctor` and training logs)."""
    backend = resolve_backend(device, "auto")
    return f"{backend.name} ({backend.reason})"


def _normalised(device: torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _resolve(device: torch.device, choice: str) -> ScanBackend:
    if choice == "torch":
        return _torch_backend(f"forced by {ENV_VAR} or argument")
    if choice != "auto":
        why = _unavailable(choice, device)
        if why is not None:
            hint = INSTALL_HINT if choice == "cuda" else f"use {ENV_VAR}=auto or =torch"
            raise ScanBackendError(f"scan backend {choice!r} requested but {why}; {hint}")
        return _build(choice, device, f"forced by {ENV_VAR} or argument")
    if device.type != "cuda":
        return _torch_backend(f"device {device.type} has no GPU kernels")
    skipped = []
    for name in AUTO_ORDER:
        why = _unavailable(name, device)
        if why is None:
            note = "; ".join(skipped)
            return _build(name, device, _describe(name) + (f"; fell back: {note}" if note else ""))
        skipped.append(f"{name} unavailable: {why}")
    return _torch_backend("SLOW FALLBACK on a GPU: " + "; ".join(skipped) + f". To fix: {INSTALL_HINT}")


def _describe(name: str) -> str:
    if name == "triton":
        import triton

        return f"Triton {triton.__version__} scan kernels (no compiled mamba-ssm needed)"
    return cuda_kernels_status()


def _unavailable(name: str, device: torch.device) -> Optional[str]:
    """None if `name` runs on `device`, else why not."""
    if name == "cuda":
        if device.type != "cuda":
            return "the tensors are not on a CUDA device"
        return None if load_cuda_kernels() is not None else cuda_kernels_status()
    return _triton_unavailable(device)


_TRITON_PROBES: dict[tuple, Optional[str]] = {}


def _triton_unavailable(device: torch.device) -> Optional[str]:
    try:
        import triton
    except Exception as exc:  # CPU-only torch builds ship no Triton
        return f"Triton is not installed ({type(exc).__name__}: {exc})"
    version = tuple(int(p) for p in triton.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_TRITON:
        return f"Triton {triton.__version__} is too old (needs >= {'.'.join(map(str, MIN_TRITON))})"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"Triton compiles for CUDA GPUs only, not {device.type} (TRITON_INTERPRET=1 interprets it, for tests)"
    key = (device.type, device.index)
    if key not in _TRITON_PROBES:
        _TRITON_PROBES[key] = _probe_triton(device)
    return _TRITON_PROBES[key]


def _probe_triton(device: torch.device) -> Optional[str]:
    """Compile and run a small scan on `device` and compare it with the reference: None if it agrees."""
    from .selective_scan_ref import selective_scan_ref
    from .triton_selective_scan import selective_scan_triton

    gen = torch.Generator().manual_seed(0)
    b, d, n, L = 1, 4, 16, 100
    args = [torch.randn(s, generator=gen).to(device) for s in ((b, d, L), (b, d, L), (d, n), (b, n, L), (b, n, L))]
    args[2] = -args[2].abs()
    try:
        got = selective_scan_triton(*args, delta_softplus=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # compilation or launch failure on this GPU / Triton
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        return f"Triton could not run the scan on {name} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    ref = selective_scan_ref(*args, delta_softplus=True)
    err = ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
    return None if err < 1e-3 else f"Triton's scan disagrees with the reference on this device (rel. error {err:.1e})"


def _conv_kernel(name: str, device: torch.device) -> Optional[ConvKernel]:
    """The conv of backend `name`: the `cuda` backend takes causal-conv1d's where installed; otherwise (and
    always for `triton`, which must not depend on compiled extensions) the Triton conv."""
    kernels = load_cuda_kernels() if name == "cuda" and device.type == "cuda" else None
    if kernels is not None and kernels.conv_fwd is not None:
        return causal_conv1d_cuda
    if _triton_unavailable(device) is None:
        from .triton_causal_conv1d import causal_conv1d_triton

        return causal_conv1d_triton
    return None


def _build(name: str, device: torch.device, reason: str) -> ScanBackend:
    if name == "triton":
        from .triton_selective_scan import selective_scan_triton as scan
    else:
        scan = selective_scan_cuda
    conv = _conv_kernel(name, device)
    if conv is None:  # no conv kernel: the unfused body around the compiled scan
        return ScanBackend(name, reason + "; conv via torch", scan, partial(mamba_inner_unfused, scan=scan))
    return ScanBackend(name, f"{reason}; conv {conv.name}", scan, partial(mamba_inner_fused, conv=conv, scan=scan))


def _torch_backend(reason: str) -> ScanBackend:
    return ScanBackend("torch", f"pure-PyTorch chunked scan; {reason}", selective_scan_chunked,
                       partial(mamba_inner_unfused, scan=selective_scan_chunked))
