"""NNUNETV2_MAMBAHOME_LAYOUT: channels-last activations give the standard network's outputs and gradients."""
from __future__ import annotations

import copy

import pytest
import torch

from nnunetv2_mambahome.modules import MambaHoMEBlock
from nnunetv2_mambahome.nets import MambaHoMEUNet
from nnunetv2_mambahome.nets.layout import LAYOUT_ENV, requested_layout, resolved_layout
from plans_shapes import SHAPES, as_2d, configuration, plain_arch, plans


def _plan(dims: int, width: int = 4):
    """(patch, arch) of the 'iso4' plans with narrow features, as 3D or nnU-Net's 2d configuration."""
    _, patch, features, kernels, strides = SHAPES[0]
    arch = plain_arch([min(width * 2 ** i, 8 * width) for i in range(len(features))], kernels, strides)
    return (patch, arch) if dims == 3 else (patch[1:], as_2d(arch))


def _net(monkeypatch, layout: str, patch, arch) -> MambaHoMEUNet:
    monkeypatch.setenv(LAYOUT_ENV, layout)
    torch.manual_seed(0)
    return MambaHoMEUNet.from_configuration(configuration(plans(patch, arch)), 2, 3, True, preset="light",
                                            scan_backend="torch")


@pytest.mark.parametrize("dims", [3, 2])
def test_channels_last_network_matches_the_standard_one(monkeypatch, dims) -> None:
    patch, arch = _plan(dims)
    standard = _net(monkeypatch, "standard", patch, arch)
    channels_last = _net(monkeypatch, "channels_last", patch, arch)
    channels_last.load_state_dict(standard.state_dict())
    fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
    convs = [m for m in channels_last.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs and all(m.weight.is_contiguous(memory_format=fmt) for m in convs)
    assert channels_last.settings()["layout"] == "channels_last" and standard.settings()["layout"] == "standard"
    x = torch.randn(2, 2, *patch)
    outs = {}
    for name, net in (("standard", standard), ("channels_last", channels_last)):
        out = net(x)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in out).backward()
        outs[name] = (out, {n: p.grad for n, p in net.named_parameters() if p.requires_grad})
    (out_s, g_s), (out_c, g_c) = outs["standard"], outs["channels_last"]
    assert all(o.is_contiguous() for o in out_c)  # outputs in the standard layout, as nnU-Net expects
    for a, b in zip(out_c, out_s):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert g_c.keys() == g_s.keys()
    for k in g_s:
        torch.testing.assert_close(g_c[k], g_s[k], rtol=1e-3, atol=1e-5 * max(1.0, g_s[k].abs().max().item()), msg=k)


def test_block_keeps_its_input_layout() -> None:
    """Tokens as a view of a channels-last map and back. The GSC is left out: on CPUs PyTorch's InstanceNorm,
    and with one thread also its conv3d, return the standard layout whatever their input's."""
    torch.manual_seed(0)
    block = MambaHoMEBlock(8, depth=1, group_size=16, num_experts=2)
    block.gsc = torch.nn.Identity()
    x = torch.randn(2, 8, 4, 6, 5)
    standard = block(x)
    channels_last = block(x.contiguous(memory_format=torch.channels_last_3d))
    assert standard.is_contiguous() and channels_last.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(channels_last, standard, rtol=1e-5, atol=1e-6)


def test_layout_setting(monkeypatch) -> None:
    monkeypatch.delenv(LAYOUT_ENV, raising=False)
    assert requested_layout() == "auto" and resolved_layout() == "standard"
    monkeypatch.setenv(LAYOUT_ENV, " Channels_Last ")
    assert resolved_layout() == "channels_last"
    monkeypatch.setenv(LAYOUT_ENV, "nhwc")
    with pytest.raises(ValueError, match="NNUNETV2_MAMBAHOME_LAYOUT='nhwc': use one of auto, standard, channels_last"):
        resolved_layout()


def test_copied_network_keeps_its_layout(monkeypatch) -> None:
    """deepcopy / state_dict round trips (nnU-Net's checkpoints) keep the channels-last weights."""
    net = _net(monkeypatch, "channels_last", *_plan(3))
    clone = copy.deepcopy(net)
    clone.load_state_dict(net.state_dict())
    conv = next(m for m in clone.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_channels_last_reaches_the_token_blocks_with_the_triton_norm(monkeypatch) -> None:
    """With the Triton instance norm (interpreted here; the CPU named its device) the layout holds from the input
    to the Mamba-HoME blocks and back; outputs and gradients equal the standard network's with PyTorch's norms."""
    pytest.importorskip("triton")
    import nnunetv2_mambahome.modules.instance_norm as norms
    from nnunetv2_mambahome.modules.instance_norm import NORM_ENV

    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setattr(norms, "_TRITON_DEVICE", "cpu")
    patch, arch = _plan(2)
    monkeypatch.setenv(NORM_ENV, "torch")
    standard = _net(monkeypatch, "standard", patch, arch)
    monkeypatch.setenv(NORM_ENV, "triton")
    channels_last = _net(monkeypatch, "channels_last", patch, arch)
    channels_last.load_state_dict(standard.state_dict())
    seen = []
    for block in (m for m in channels_last.modules() if isinstance(m, MambaHoMEBlock)):
        block.register_forward_hook(lambda m, args, out: seen.append(
            (args[0].is_contiguous(memory_format=torch.channels_last),
             out.is_contiguous(memory_format=torch.channels_last))))
    x = torch.randn(2, 2, *patch)
    results = []
    for net in (standard, channels_last):
        out = net(x)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in out).backward()
        results.append((out, {n: p.grad for n, p in net.named_parameters() if p.requires_grad}))
    assert seen and all(s == (True, True) for s in seen), seen
    (out_s, g_s), (out_c, g_c) = results
    for a, b in zip(out_c, out_s):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for k in g_s:
        torch.testing.assert_close(g_c[k], g_s[k], rtol=1e-3, atol=1e-4 * max(1.0, g_s[k].abs().max().item()), msg=k)
