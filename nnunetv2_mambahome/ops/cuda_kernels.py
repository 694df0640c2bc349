"""Lazy, guarded access to the compiled kernels of mamba-ssm and causal-conv1d (the `cuda` backend).

Neither package is a dependency: `import mamba_ssm` fails wherever its `selective_scan_cuda` extension was
not compiled, and its top-level package pulls in Triton-based Mamba2 code. We therefore import only the
submodules we need, once, and remember why an import failed so that `doctor` and errors can say so.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

INSTALL_HINT = (
    "install the compiled kernels with `pip install --no-build-isolation \"nnunetv2-mambahome[cuda]\"` "
    "(mamba-ssm and causal-conv1d built against your torch and CUDA), or use the pure-PyTorch scan with "
    "NNUNETV2_MAMBAHOME_SCAN=torch"
)


@dataclass(frozen=True)
class CudaKernels:
    """The kernel entry points; `causal_conv1d_fn` is None when only mamba-ssm is installed."""

    selective_scan_fn: Callable
    mamba_inner_fn: Callable
    causal_conv1d_fn: Optional[Callable]
    mamba_ssm_version: str
    causal_conv1d_version: Optional[str]


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Optional[CudaKernels], str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
    except Exception as exc:  # ImportError, or OSError/undefined symbol from a mismatched build
        return None, f"mamba_ssm kernels unavailable ({type(exc).__name__}: {exc})"
    try:
        mamba_version = version("mamba-ssm")
    except PackageNotFoundError:
        mamba_version = "unknown"
    conv_fn, conv_version, note = None, None, ""
    try:
        from causal_conv1d import causal_conv1d_fn as conv_fn

        conv_version = version("causal-conv1d")
    except Exception as exc:
        note = f"; causal-conv1d unavailable ({type(exc).__name__}), using F.conv1d + selective_scan_fn"
    kernels = CudaKernels(selective_scan_fn, mamba_inner_fn, conv_fn, mamba_version, conv_version)
    return kernels, f"mamba-ssm {mamba_version} kernels loaded{note}"


def load_cuda_kernels() -> Optional[CudaKernels]:
    """The compiled kernels, or None when they cannot be imported on this machine."""
    return _load()[0]


def cuda_kernels_status() -> str:
    """One line saying whether the kernels loaded and, if not, why."""
    return _load()[1]
