"""Convolution biases that the instance norm right after them cancels: kept as parameters, no longer applied.

InstanceNorm subtracts the mean of every (sample, channel), so a per-channel constant that the convolution adds
before it drops out exactly: norm(conv(x) + b) == norm(conv(x)), and the gradient of b is zero. nnU-Net's plans
still ask for conv biases (`conv_bias: True` in PlainConvUNet and ResidualEncoderUNet plans), and the official
GSC has them too, so a training step spent GPU time adding those biases to full-resolution feature maps and
reducing their (zero) gradients (H200 profile: ~2.5 of 63 GPU-ms per step, docs/BENCHMARKS.md).
`skip_cancelled_bias` keeps the parameter, so state_dicts, parameter counts and checkpoints are unchanged, but
freezes it (requires_grad False: no gradient, no weight decay, and DistributedDataParallel ignores it) and
convolves without it. Outputs are equal up to float rounding of the mean subtraction; the official GSC's bias
gradients are zero to rounding (tests/test_reference_fixtures.py).
Only where nothing sits between the conv and the norm: not after dropout or a nonlinearity first, and not before
a norm with running statistics.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules.instancenorm import _InstanceNorm

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _BiasSkipped:
    """Forward of a conv whose bias the following instance norm cancels."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight, None)


def _skipping_class(base: type) -> type:
    return type(f"{base.__name__}BiasCancelled", (_BiasSkipped, base), {
        "__module__": __name__, "__doc__": f"{base.__name__} whose bias a following InstanceNorm cancels."})


Conv1dBiasCancelled, Conv2dBiasCancelled, Conv3dBiasCancelled = (_skipping_class(c) for c in _CONVS)
_SKIPPING = dict(zip(_CONVS, (Conv1dBiasCancelled, Conv2dBiasCancelled, Conv3dBiasCancelled)))


def cancels_bias(norm: nn.Module) -> bool:
    """Whether `norm` removes any per-channel constant of its input: an InstanceNorm without running statistics."""
    return isinstance(norm, _InstanceNorm) and not norm.track_running_stats


def skip_cancelled_bias(conv: nn.Module, norm: nn.Module) -> bool:
    """Stop applying `conv`'s bias when `norm` directly follows it and cancels it; True if it did."""
    if type(conv) not in _SKIPPING or conv.bias is None or not cancels_bias(norm):
        return False
    conv.__class__ = _SKIPPING[type(conv)]
    conv.bias.requires_grad_(False)
    return True


def skip_cancelled_biases(module: nn.Module) -> int:
    """`skip_cancelled_bias` on every dynamic-network-architectures ConvDropoutNormReLU in `module` whose conv
    feeds its norm directly (no dropout, norm before the nonlinearity); returns how many biases it skipped."""
    from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU

    skipped = 0
    for m in module.modules():
        if isinstance(m, ConvDropoutNormReLU) and hasattr(m, "norm") and not hasattr(m, "dropout") and \
                m.all_modules[1] is m.norm:
            skipped += skip_cancelled_bias(m.conv, m.norm)
    return skipped
