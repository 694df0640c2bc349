"""Precision policy: the token path (DyT, Mamba, HoME) runs in float32 even inside nnU-Net's fp16 autocast.

nnU-Net trains and predicts under fp16 autocast. A selective scan accumulating exp(delta*A) products over
10^5 tokens, and routing softmaxes over logits of size ~d (up to several hundred), are exactly where fp16
overflows or loses the small differences that decide routing; other Mamba plugins report NaN losses there.
The token path is cheap next to the 3D convolutions (which stay in autocast), so we simply turn autocast
off around it and compute in float32.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def float32_region(device: torch.device) -> Iterator[None]:
    """Disable autocast for `device`'s type inside the block; callers cast their inputs with `.float()`."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield
