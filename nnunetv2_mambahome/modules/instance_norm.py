"""Which norms the networks build: PyTorch's or the Triton kernels (`ops.triton_instance_norm`, `ops.triton_dyt`).

NNUNETV2_MAMBAHOME_NORM=auto|torch|triton is read when a network is built (`resolved_norm`, the one place that
decides it). `auto` (default) is `triton` where CUDA and Triton are available and `torch` elsewhere. With
`triton`, every `nn.InstanceNorm{1,2,3}d` a plans-built network (`nets.PlansUNet` and its subclasses) would
build (the plans' norm_op of the conv stages and decoder, the GSC's norms) becomes a subclass with the same
parameters and state_dict whose forward on CUDA tensors with long rows, or in the channels-last layout
(`nets.layout`, kept by the kernels), runs the Triton kernels; on other devices, on short standard-layout rows
and where the module tracks running statistics, it is PyTorch's forward unchanged.
Numerics: the statistics and the normalisation are float32 in both (PyTorch's cuDNN path also reads half
inputs and accumulates in float32).
Why Triton by default on GPUs: cuDNN's InstanceNorm kernels took 10.2 of 76 GPU-ms of a graphed training step
on the H200; with the Triton kernels the step went from 83.0 to 71.8 ms (docs/BENCHMARKS.md).
The same setting covers Dynamic Tanh: every `modules.DynamicTanh` (in every Mamba-HoME block, the paper network's
too) reads it at construction and, with `triton`, runs one fused Triton kernel each way on CUDA tensors instead
of PyTorch's ~3 forward and ~8 backward kernels (computed in float32 and rounded once to its output dtype).
"""
from __future__ import annotations

from typing import Type

import torch
from torch import Tensor, nn

from ..settings import env_choice

NORM_ENV = "NNUNETV2_MAMBAHOME_NORM"
NORM_CHOICES = ("auto", "torch", "triton")
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def requested_norm() -> str:
    """The NNUNETV2_MAMBAHOME_NORM choice (`auto` when unset); ValueError naming the allowed values."""
    return env_choice(NORM_ENV, NORM_CHOICES)


def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolved_norm() -> str:
    """`torch` or `triton`: the requested choice, `auto` resolved by whether CUDA and Triton are available."""
    choice = requested_norm()
    if choice == "auto":
        return "triton" if torch.cuda.is_available() and _triton_importable() else "torch"
    return choice


# Rows (voxels per sample and channel) from which the Triton kernels run on standard-layout inputs. Below it PyTorch's
# kernels are as fast on the GPU (H200, graphed fwd+bwd: 0.026 vs 0.033 ms at 15,360 voxels; 0.29 vs 0.09 ms at
# 122,880; 2.09 vs 0.28 ms at 983,040) and cheaper to launch (eager: ~0.35 ms against ~1.0 ms, the custom op's
# Python dispatch). Channels-last inputs run the Triton kernels at every row length (see `_TritonForward`).
TRITON_MIN_ROW = 65536
_TRITON_DEVICE = "cuda"  # the device type whose tensors run the Triton kernels (the CPU tests set "cpu")


def _channels_last(x: Tensor) -> bool:
    """`ops.triton_instance_norm.is_channels_last` (x lies as (N, *spatial, C), not also as (N, C, *spatial)),
    repeated here so that deciding needs no Triton import."""
    return not x.is_contiguous() and x.movedim(1, -1).is_contiguous()


class _TritonForward:
    """Forward of an InstanceNorm subclass: the Triton kernels on CUDA tensors without running statistics,
    channels-last ones at every row length and standard ones from `TRITON_MIN_ROW` voxels per row; PyTorch's
    forward otherwise. Channels-last inputs always take the kernels because PyTorch's instance norm copies them
    to the standard layout and returns a standard output, which would bring back the layout conversions around
    every convolution that a channels-last network avoids (`nets.layout`); the kernels keep the layout."""

    def forward(self, x: Tensor) -> Tensor:
        if (x.device.type != _TRITON_DEVICE or self.track_running_stats or x.dim() != self._get_no_batch_dim() + 1
                or (x[0, 0].numel() < TRITON_MIN_ROW and not _channels_last(x))):
            return super().forward(x)
        from ..ops.triton_instance_norm import instance_norm_triton

        return instance_norm_triton(x, self.weight, self.bias, self.eps)


def _triton_class(base: type) -> type:
    return type(f"{base.__name__}Triton", (_TritonForward, base), {
        "__module__": __name__, "__doc__": f"{base.__name__} whose CUDA forward runs the Triton kernels."})


InstanceNorm1dTriton, InstanceNorm2dTriton, InstanceNorm3dTriton = (_triton_class(c) for c in _INSTANCE_NORMS)
_TRITON = dict(zip(_INSTANCE_NORMS, (InstanceNorm1dTriton, InstanceNorm2dTriton, InstanceNorm3dTriton)))


def instance_norm_op(norm_op: Type[nn.Module]) -> Type[nn.Module]:
    """`norm_op`, or its Triton subclass when NNUNETV2_MAMBAHOME_NORM=triton and it is a PyTorch InstanceNorm."""
    if resolved_norm() == "triton" and norm_op in _TRITON:
        return _TRITON[norm_op]
    return norm_op


def triton_norm_problem(device: torch.device) -> str | None:
    """Why NNUNETV2_MAMBAHOME_NORM cannot be used on `device`, or None (for `settings` and `doctor`)."""
    try:
        choice = requested_norm()
    except ValueError as exc:
        return str(exc)
    if choice == "triton" and torch.device(device).type == "cuda" and not _triton_importable():
        return f"{NORM_ENV}=triton needs Triton, which this PyTorch build lacks; use {NORM_ENV}=torch or auto"
    return None
