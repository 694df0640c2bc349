"""Kernels and their pure-PyTorch references, kept apart from the nn.Modules that use them.

The Triton kernels (`triton_selective_scan`, `triton_causal_conv1d`, `triton_instance_norm`, `triton_dyt`) import
Triton, which CPU-only PyTorch builds lack: they are loaded on first use (`from nnunetv2_mambahome.ops import
selective_scan_triton` works where Triton exists).
"""
from .backends import (AUTO_ORDER, BACKENDS, ENV_VAR, ScanBackend, ScanBackendError, explain_auto_choice,
                       requested_backend, resolve_backend)
from .causal_conv1d_ref import causal_conv1d_ref
from .cuda_kernels import selective_scan_cuda
from .dyt_ref import dyt_ref
from .mamba_inner import mamba_inner_fused, mamba_inner_unfused
from .selective_scan_chunked import selective_scan_chunked
from .selective_scan_ref import selective_scan_ref

__all__ = [
    "AUTO_ORDER", "BACKENDS", "ENV_VAR", "ScanBackend", "ScanBackendError", "causal_conv1d_ref", "dyt_ref",
    "explain_auto_choice", "mamba_inner_fused", "mamba_inner_unfused", "requested_backend", "resolve_backend",
    "selective_scan_chunked", "selective_scan_cuda", "selective_scan_ref", "selective_scan_triton",
]


def __getattr__(name: str):
    if name == "selective_scan_triton":
        from .triton_selective_scan import selective_scan_triton

        return selective_scan_triton
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
