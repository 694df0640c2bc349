"""Precision policy of the token path (DyT, Mamba, HoME) inside nnU-Net's fp16 autocast.

nnU-Net trains and predicts under fp16 autocast. fp16's range (max 65504) is what breaks other Mamba
plugins: a selective scan multiplying exp(delta*A) factors over 10^5 tokens, or routing logits over
hundreds of channels, overflow or underflow there and the loss turns NaN. The token path therefore never
runs under fp16. Inside `token_region` autocast is off and the token path computes explicitly in one
*token dtype*:

- bfloat16 when autocast is on and the device supports it (float32's exponent range, so nothing overflows;
  half the memory traffic of float32). What decides stability stays float32: the residual stream between
  token layers, the scan's state recurrence and its softplus(delta) (inside mamba-ssm's kernels, or upcast
  in the torch backend), and HoME's routing (slot embeddings, logits, softmaxes, gates, level 2).
- float32 otherwise: outside autocast (CPU training, the `_noAMP` trainers, the reference fixtures), on
  devices without bfloat16, or when NNUNETV2_MAMBAHOME_TOKEN_DTYPE=float32 asks for it.

Regions nest: an inner region keeps the dtype the outermost one chose, so a block, its layers and their
mixers agree. `float32_region` is the same with float32 forced (whole-network fp32, the peers' layers).
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Iterator, Optional

import torch

TOKEN_DTYPE_ENV = "NNUNETV2_MAMBAHOME_TOKEN_DTYPE"
_CHOICES = {"auto": None, "bfloat16": torch.bfloat16, "float32": torch.float32}
# the outermost region's dtype, per thread; a threading.local (not a ContextVar) because torch.compile traces
# its reads and writes, while ContextVar.set() is a graph break
_active = threading.local()


@functools.lru_cache(maxsize=None)
def _bfloat16_native(device_type: str, index: Optional[int]) -> bool:
    """Whether the device runs bfloat16 natively (CUDA: compute capability >= 8.0; CPU: always). Cached:
    asked on every token layer's entry."""
    if device_type == "cuda":
        with torch.cuda.device(index if index is not None else torch.cuda.current_device()):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    return device_type == "cpu"


def token_dtype(device: torch.device) -> torch.dtype:
    """The dtype a token path entered now on `device` computes in (see the module docstring)."""
    active = getattr(_active, "dtype", None)
    if active is not None:
        return active
    return autocast_token_dtype(device) if torch.is_autocast_enabled(device.type) else torch.float32


def validate_token_dtype_env() -> str:
    """The NNUNETV2_MAMBAHOME_TOKEN_DTYPE choice (`auto` when unset); ValueError naming the allowed values if unknown."""
    choice = os.environ.get(TOKEN_DTYPE_ENV, "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(f"{TOKEN_DTYPE_ENV}={choice!r}: use one of {sorted(_CHOICES)}")
    return choice


@torch.compiler.assume_constant_result  # torch.compile bakes the answer in instead of tracing the device query
def autocast_token_dtype(device: torch.device) -> torch.dtype:
    """The token dtype under autocast on `device`: bfloat16 where native, unless the environment says float32."""
    wanted = _CHOICES[validate_token_dtype_env()]
    if wanted == torch.float32:
        return torch.float32
    if _bfloat16_native(device.type, device.index):
        return torch.bfloat16
    if wanted == torch.bfloat16:
        raise RuntimeError(f"{TOKEN_DTYPE_ENV}=bfloat16 but {device} has no native bfloat16; use auto or float32")
    return torch.float32


def describe_policy(device: torch.device, autocast: bool) -> str:
    """One line for training logs: what computes in which precision on `device`."""
    if not autocast:
        return "everything float32"
    dtype = str(autocast_token_dtype(device)).replace("torch.", "")
    return f"token path {dtype} (residual stream, scan state and HoME routing float32), rest fp16 autocast"


@contextlib.contextmanager
def token_region(device: torch.device, dtype: Optional[torch.dtype] = None) -> Iterator[torch.dtype]:
    """Autocast off for `device` inside; yields the token dtype (`dtype` forces one for this region)."""
    dtype = dtype or token_dtype(device)
    outer = getattr(_active, "dtype", None)
    _active.dtype = dtype
    try:
        with torch.autocast(device_type=device.type, enabled=False):
            yield dtype
    finally:
        _active.dtype = outer


@contextlib.contextmanager
def float32_region(device: torch.device) -> Iterator[None]:
    """Everything inside, token path included, in float32; callers cast their inputs with `.float()`."""
    with token_region(device, torch.float32):
        yield
