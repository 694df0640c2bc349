"""Lazy, guarded access to the compiled kernels of mamba-ssm and causal-conv1d (the `cuda` backend).

Neither package is a dependency: `import mamba_ssm` fails wherever its `selective_scan_cuda` extension was
not compiled, and its top-level package pulls in Triton-based Mamba2 code. We therefore import only what we
need, once, and remember why an import failed so that `doctor` and errors can say so.

The extension's scan (`selective_scan_cuda.fwd` / `.bwd`, a pybind module Dynamo cannot trace) is registered
here as the custom ops `mambahome::selective_scan_cuda_fwd` / `_bwd` (see `scan_ops`); `selective_scan_cuda` is
the differentiable function. causal-conv1d's conv is registered again as the functional custom ops
`mambahome::causal_conv1d_cuda_fwd` / `_bwd` (`conv_ops`; `causal_conv1d_cuda`): its own ops write into an
`out=` tensor, which torch.compile refuses (a graph break per mixer on the H200, 16 per step).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Optional

import torch

from .conv_ops import define_conv_kernel
from .scan_ops import define_scan_kernel

INSTALL_HINT = (
    "install the compiled kernels with `pip install --no-build-isolation \"nnunetv2-mambahome[cuda]\"` "
    "(mamba-ssm and causal-conv1d built against your torch and CUDA), or use the Triton scan "
    "(NNUNETV2_MAMBAHOME_SCAN=triton, no compilation needed) or the pure-PyTorch one (=torch)"
)
_MAMBA_CHUNK = 2048  # selective_scan_cuda keeps one (state, decay) pair per 2048 steps for its backward


@dataclass(frozen=True)
class CudaKernels:
    """The extension and causal-conv1d's functions (None when only mamba-ssm is installed)."""

    selective_scan_cuda: ModuleType
    conv_fwd: Optional[Callable]
    conv_bwd: Optional[Callable]
    mamba_ssm_version: str
    causal_conv1d_version: Optional[str]


_LOADED: dict[str, tuple[Optional[CudaKernels], str]] = {}


def _load() -> tuple[Optional[CudaKernels], str]:
    if "kernels" in _LOADED:
        return _LOADED["kernels"]
    from importlib.metadata import PackageNotFoundError, version

    try:
        from mamba_ssm.ops import selective_scan_interface  # imports the compiled selective_scan_cuda
    except Exception as exc:  # ImportError, or OSError/undefined symbol from a mismatched build
        _LOADED["kernels"] = None, f"mamba_ssm kernels unavailable ({type(exc).__name__}: {exc})"
        return _LOADED["kernels"]
    try:
        mamba_version = version("mamba-ssm")
    except PackageNotFoundError:
        mamba_version = "unknown"
    conv_fwd = conv_bwd = conv_version = None
    note = ""
    try:
        from causal_conv1d.cpp_functions import causal_conv1d_bwd_function, causal_conv1d_fwd_function

        conv_fwd, conv_bwd, conv_version = causal_conv1d_fwd_function, causal_conv1d_bwd_function, version(
            "causal-conv1d")
    except Exception as exc:
        note = f"; causal-conv1d unavailable ({type(exc).__name__}), the conv runs on the Triton kernel"
    kernels = CudaKernels(selective_scan_interface.selective_scan_cuda, conv_fwd, conv_bwd, mamba_version,
                          conv_version)
    _LOADED["kernels"] = kernels, f"mamba-ssm {mamba_version} kernels loaded" + (
        f", causal-conv1d {conv_version}" if conv_version else "") + note
    return _LOADED["kernels"]


def load_cuda_kernels() -> Optional[CudaKernels]:
    """The compiled kernels, or None when they cannot be imported on this machine."""
    return _load()[0]


def cuda_kernels_status() -> str:
    """One line saying whether the kernels loaded and, if not, why."""
    return _load()[1]


def _extension():
    kernels = load_cuda_kernels()
    if kernels is None:
        raise RuntimeError(f"the cuda scan backend needs mamba-ssm's compiled kernels: {cuda_kernels_status()}")
    return kernels.selective_scan_cuda


def _l_contiguous(t: torch.Tensor) -> torch.Tensor:
    """`t` (..., L) with stride 1 on L, as both extensions need it (causal-conv1d takes stride(1) == 1 with
    stride(2) > 1 for its channel-last layout). A length-1 sequence may carry any stride on L (GEMM outputs of
    one token do) and `contiguous()` leaves it alone: that one gets stride 1 as a view."""
    if t.shape[-1] == 1 and t.stride(-1) != 1:
        return t.as_strided(t.shape, (*t.stride()[:-1], 1))
    return t if t.stride(-1) == 1 else t.contiguous()


def _grouped(t: torch.Tensor) -> torch.Tensor:
    """(batch, N, L) -> (batch, 1, N, L): the extension's layout for input-dependent B/C (a view, L contiguous)."""
    return _l_contiguous(t).unsqueeze(1)


def _fwd_impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save):
    u, delta = (_l_contiguous(t) for t in (u, delta))
    z = z if z is None else _l_contiguous(z)
    out, x, *rest = _extension().fwd(u, delta, A, _grouped(B), _grouped(C), D, z, delta_bias, delta_softplus)
    return (rest[0] if z is not None else out), ([x, out] if save else [])


def _bwd_impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dout, saved):
    x, out = saved
    u, delta, dout = (_l_contiguous(t) for t in (u, delta, dout))
    z = z if z is None else _l_contiguous(z)
    du, ddelta, dA, dB, dC, dD, ddelta_bias, *rest = _extension().bwd(
        u, delta, A, _grouped(B), _grouped(C), D, z, delta_bias, dout, x, out, None, delta_softplus, z is not None)
    dz, out_z = rest if z is not None else (None, None)
    return (du, ddelta, dA, dB.squeeze(1).to(B.dtype), dC.squeeze(1).to(C.dtype), dD if D is not None else None,
            ddelta_bias if delta_bias is not None else None, dz, out_z)


def _fake_saved(u: torch.Tensor, A: torch.Tensor, z: Optional[torch.Tensor], save: bool) -> list[torch.Tensor]:
    if not save:
        return []
    b, d, L = u.shape
    n_chunks = (L + _MAMBA_CHUNK - 1) // _MAMBA_CHUNK
    return [torch.empty((b, d, n_chunks, 2 * A.shape[1]), dtype=A.dtype, device=u.device),
            torch.empty(u.shape, dtype=u.dtype, device=u.device)]


def _check(u, delta, A, B, C, D, z, delta_bias) -> None:
    if B.dim() != 3 or C.dim() != 3:
        raise ValueError("selective scan (cuda backend): B and C must be input-dependent (batch, d_state, L)")


selective_scan_cuda = define_scan_kernel("cuda", _fwd_impl, _bwd_impl, _fake_saved, _check)


def _conv_functions() -> tuple[Callable, Callable]:
    kernels = load_cuda_kernels()
    if kernels is None or kernels.conv_fwd is None:
        raise RuntimeError(f"causal-conv1d's compiled conv is not available: {cuda_kernels_status()}")
    return kernels.conv_fwd, kernels.conv_bwd


def _conv_fwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return _conv_functions()[0](_l_contiguous(x), weight, bias, None, None, None, True)


def _conv_bwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dout: torch.Tensor) -> tuple:
    return tuple(_conv_functions()[1](_l_contiguous(x), weight, bias, _l_contiguous(dout).contiguous(), None,
                                      None, None, None, False, True)[:3])


causal_conv1d_cuda = define_conv_kernel("causal-conv1d", "cuda", _conv_fwd, _conv_bwd)
