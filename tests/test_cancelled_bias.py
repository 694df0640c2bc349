"""Conv biases an instance norm cancels are kept as frozen parameters and not applied (`modules.cancelled_bias`)."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from torch import nn

from nnunetv2_mambahome.modules import GatedSpatialConv
from nnunetv2_mambahome.modules.cancelled_bias import skip_cancelled_bias, skip_cancelled_biases


def _block(**kw) -> ConvDropoutNormReLU:
    args = dict(conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    return ConvDropoutNormReLU(nn.Conv3d, 3, 4, 3, 1, **{**args, **kw})


@pytest.mark.parametrize("affine", [False, True])
def test_skipped_bias_gives_the_same_output_and_a_zero_gradient(affine) -> None:
    torch.manual_seed(0)
    block = _block(norm_op_kwargs={"eps": 1e-5, "affine": affine})
    with torch.no_grad():
        block.conv.bias.uniform_(-5, 5)  # large, so that applying it would show if the norm did not cancel it
    applied = copy.deepcopy(block)
    x = torch.randn(2, 3, 6, 5, 7)
    want = applied(x)
    want.square().sum().backward()
    assert skip_cancelled_biases(block) == 1
    got = block(x)
    got.square().sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(block.conv.weight.grad, applied.conv.weight.grad, rtol=1e-4, atol=1e-4)
    scale = applied.conv.weight.grad.abs().max()
    assert applied.conv.bias.grad.abs().max() < 1e-5 * scale  # the applied bias's gradient: zero up to rounding
    assert block.conv.bias.grad is None and not block.conv.bias.requires_grad
    assert isinstance(block.conv, nn.Conv3d) and type(block.conv).__name__ == "Conv3dBiasCancelled"


def test_state_dict_and_pickling_are_unchanged() -> None:
    block = _block()
    keys = list(block.state_dict())
    skip_cancelled_biases(block)
    assert list(block.state_dict()) == keys and "conv.bias" in keys
    buffer = io.BytesIO()
    torch.save(block, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded.conv) is type(block.conv)
    x = torch.randn(1, 3, 4, 4, 4)
    torch.testing.assert_close(loaded(x), block(x))


@pytest.mark.parametrize("kw", [dict(dropout_op=nn.Dropout3d, dropout_op_kwargs={"p": 0.5}), dict(nonlin_first=True),
                                dict(norm_op=nn.BatchNorm3d, norm_op_kwargs={}),
                                dict(norm_op_kwargs={"track_running_stats": True}), dict(conv_bias=False)],
                         ids=["dropout", "nonlin_first", "batchnorm", "running_stats", "no_bias"])
def test_bias_is_kept_where_nothing_cancels_it(kw) -> None:
    """Dropout or a nonlinearity between conv and norm, a norm that is not an InstanceNorm, running statistics."""
    block = _block(**kw)
    assert skip_cancelled_biases(block) == 0
    assert type(block.conv) is nn.Conv3d
    assert block.conv.bias is None or block.conv.bias.requires_grad


def test_gsc_skips_all_four_biases_and_keeps_its_output() -> None:
    torch.manual_seed(0)
    gsc = GatedSpatialConv(4, nn.Conv2d, nn.InstanceNorm2d)
    convs = (gsc.proj, gsc.proj2, gsc.proj3, gsc.proj4)
    assert all(type(c).__name__ == "Conv2dBiasCancelled" and not c.bias.requires_grad for c in convs)
    applied = copy.deepcopy(gsc)
    for c in (applied.proj, applied.proj2, applied.proj3, applied.proj4):
        c.__class__ = nn.Conv2d
    x = torch.randn(2, 4, 9, 8)
    torch.testing.assert_close(gsc(x), applied(x), rtol=1e-5, atol=1e-5)


def test_a_conv_before_a_norm_it_does_not_feed_is_left_alone() -> None:
    conv = nn.Conv3d(2, 2, 1)
    assert not skip_cancelled_bias(conv, nn.LayerNorm(2)) and type(conv) is nn.Conv3d
    assert not skip_cancelled_bias(nn.ConvTranspose3d(2, 2, 2), nn.InstanceNorm3d(2))
