"""The memory layout of a plans-built network's activations: standard (N, C, *spatial) or channels-last.

NNUNETV2_MAMBAHOME_LAYOUT=auto|standard|channels_last is read when a network is built (`resolved_layout`, the one
place that decides it). With `channels_last` the convolution weights are stored channels-last and the input is
converted once at the network's entry, so every activation in between lies in memory as (N, *spatial, C):
- cuDNN's half-precision convolutions compute in that layout; given standard tensors they convert input,
  weight and gradients to it and back around every call (6.2 of 56 GPU-ms of a graphed Mamba-HoME training
  step on the H200, docs/BENCHMARKS.md), which stock nnU-Net avoids because torch.compile picks the layout;
- the Triton instance norm reads and writes it directly (`ops.triton_instance_norm`), and the Mamba-HoME
  blocks see their raster tokens (N, L, C) as a view of it instead of a transposing copy;
- the outputs go back to the standard layout, which nnU-Net's losses and sliding-window code expect.
Numerics are the same operations in another order of memory (cuDNN may pick other algorithms). `auto` is
`standard` until the channels-last step has been measured on a GPU.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..settings import env_choice

LAYOUT_ENV = "NNUNETV2_MAMBAHOME_LAYOUT"
LAYOUT_CHOICES = ("auto", "standard", "channels_last")
_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}  # by tensor rank: 2D and 3D networks


def requested_layout() -> str:
    """The NNUNETV2_MAMBAHOME_LAYOUT choice (`auto` when unset); ValueError naming the allowed values."""
    return env_choice(LAYOUT_ENV, LAYOUT_CHOICES)


def resolved_layout() -> str:
    """`standard` or `channels_last`: the requested choice, `auto` resolved (standard, see the module docstring)."""
    choice = requested_layout()
    return "standard" if choice == "auto" else choice


def channels_last_format(rank: int) -> Optional[torch.memory_format]:
    """PyTorch's channels-last memory format for tensors of `rank` (4: 2D maps, 5: 3D), None for other ranks."""
    return _FORMATS.get(rank)


def store_channels_last(module: nn.Module) -> None:
    """Every 4D/5D parameter of `module` (the convolution weights) stored channels-last, in place."""
    for p in module.parameters():
        fmt = channels_last_format(p.dim())
        if fmt is not None:
            p.data = p.data.contiguous(memory_format=fmt)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """`x` (N, C, *spatial) laid out channels-last (a no-op where it already is)."""
    fmt = channels_last_format(x.dim())
    return x if fmt is None else x.contiguous(memory_format=fmt)


def to_standard(out):
    """A network output (a tensor or a list of deep-supervision tensors) in the standard contiguous layout."""
    if isinstance(out, (list, tuple)):
        return type(out)(o.contiguous() for o in out)
    return out.contiguous()
