"""The Triton instance norm against `F.instance_norm` (interpreted on CPUs, compiled on GPUs), its custom ops,
and the one switch that makes networks build it (NNUNETV2_MAMBAHOME_NORM) without changing their parameters."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_mambahome.modules.instance_norm import (NORM_ENV, InstanceNorm3dTriton, instance_norm_op,
                                                     requested_norm)

triton = pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _case(shape, dtype, affine, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3 + 5).to(dtype)  # an offset mean, as after a conv
    w = torch.randn(shape[1], generator=g) if affine else None
    b = torch.randn(shape[1], generator=g) if affine else None
    dy = torch.randn(shape, generator=g).to(dtype)
    return [t.to(DEVICE) if t is not None else None for t in (x, w, b, dy)]


# one split and partial blocks; several splits per row (M = 24,000 > 16,384); 2D without affine; 2 voxels
@pytest.mark.parametrize("shape,affine", [((2, 3, 5, 6, 7), True), ((1, 2, 20, 30, 40), True), ((2, 3, 9, 11), False),
                                          ((3, 2, 1, 1, 2), True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_instance_norm_forward_and_every_gradient(shape, affine, dtype) -> None:
    from nnunetv2_mambahome.ops.triton_instance_norm import instance_norm_triton

    x, w, b, dy = _case(shape, dtype, affine)
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    y = instance_norm_triton(*leaves, eps=1e-5)
    (y.float() * dy.float()).sum().backward()
    ref_leaves = [t.clone().float().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    ref = F.instance_norm(ref_leaves[0], weight=ref_leaves[1], bias=ref_leaves[2], eps=1e-5)
    (ref * dy.float()).sum().backward()
    assert y.dtype == dtype and y.shape == x.shape
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(y.float(), ref.detach(), **tol)
    for got, want in zip(leaves, ref_leaves):
        if got is not None:
            scale = want.grad.abs().max().item()
            torch.testing.assert_close(got.grad.float(), want.grad, rtol=tol["rtol"], atol=tol["atol"] * max(1, scale))


def test_gradients_are_deterministic() -> None:
    from nnunetv2_mambahome.ops.triton_instance_norm import instance_norm_triton

    x, w, b, dy = _case((2, 3, 20, 30, 40), torch.float32, True, seed=1)
    runs = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
        (instance_norm_triton(*leaves) * dy).sum().backward()
        runs.append([t.grad for t in leaves])
    for a, b_ in zip(*runs):
        assert torch.equal(a, b_)


def test_custom_ops_pass_opcheck() -> None:
    from nnunetv2_mambahome.ops.triton_instance_norm import instance_norm_bwd, instance_norm_fwd

    x, w, b, dy = _case((2, 3, 4, 5, 6), torch.float32, True)
    torch.library.opcheck(instance_norm_fwd, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), 1e-5))
    y, mean, rstd = instance_norm_fwd(x.detach(), w.detach(), b.detach(), 1e-5)
    torch.library.opcheck(instance_norm_bwd, (x.detach(), w.detach(), b.detach(), mean, rstd, dy))
    torch.library.opcheck(instance_norm_fwd, (x.detach().requires_grad_(), None, None, 1e-5))  # the GSC's norms
    y, mean, rstd = instance_norm_fwd(x.detach(), None, None, 1e-5)
    torch.library.opcheck(instance_norm_bwd, (x.detach(), None, None, mean, rstd, dy))


def test_bad_input_names_the_op() -> None:
    from nnunetv2_mambahome.ops.triton_instance_norm import instance_norm_triton

    with pytest.raises(ValueError, match="expected \\(batch, channels, \\*spatial\\)"):
        instance_norm_triton(torch.randn(4, 5, device=DEVICE))
    with pytest.raises(ValueError, match="expected more than 1 spatial element"):  # as F.instance_norm
        instance_norm_triton(torch.randn(2, 3, 1, 1, 1, device=DEVICE))


def test_the_switch_decides_the_class_and_keeps_parameters(monkeypatch) -> None:
    monkeypatch.delenv(NORM_ENV, raising=False)
    default = InstanceNorm3dTriton if torch.cuda.is_available() else nn.InstanceNorm3d  # auto
    assert requested_norm() == "auto" and instance_norm_op(nn.InstanceNorm3d) is default
    monkeypatch.setenv(NORM_ENV, "torch")
    assert instance_norm_op(nn.InstanceNorm3d) is nn.InstanceNorm3d
    monkeypatch.setenv(NORM_ENV, "triton")
    assert instance_norm_op(nn.InstanceNorm3d) is InstanceNorm3dTriton
    assert instance_norm_op(nn.BatchNorm3d) is nn.BatchNorm3d  # only PyTorch's instance norms are replaced
    torch.manual_seed(0)
    plain, fast = nn.InstanceNorm3d(4, affine=True), InstanceNorm3dTriton(4, affine=True)
    fast.load_state_dict(plain.state_dict())
    assert isinstance(fast, nn.InstanceNorm3d) and fast.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 4, 3, 4, 5)
    torch.testing.assert_close(fast(x), plain(x))  # CPU tensors: PyTorch's forward
    monkeypatch.setenv(NORM_ENV, "cudnn")
    with pytest.raises(ValueError, match="NNUNETV2_MAMBAHOME_NORM='cudnn': use one of auto, torch, triton"):
        instance_norm_op(nn.InstanceNorm3d)


def test_networks_built_with_triton_norms_have_the_same_state_dict(monkeypatch) -> None:
    """Every InstanceNorm of a Mamba-HoME U-Net (conv stages, decoder, GSC) becomes the Triton class; the
    parameters, their names and their initialisation are unchanged."""
    from plans_shapes import K3, configuration, plain_arch, plans

    from nnunetv2_mambahome.nets import MambaHoMEUNet

    arch = plain_arch([16, 32, 64, 128], [K3] * 4, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    nets = {}
    for choice in ("torch", "triton"):
        monkeypatch.setenv(NORM_ENV, choice)
        torch.manual_seed(0)
        nets[choice] = MambaHoMEUNet.from_configuration(configuration(plans([32, 64, 64], arch)), 1, 3, True,
                                                        preset="light")
    norms = {c: [m for m in n.modules() if isinstance(m, nn.modules.instancenorm._InstanceNorm)]
             for c, n in nets.items()}
    assert norms["torch"] and all(type(m) is nn.InstanceNorm3d for m in norms["torch"])
    assert len(norms["triton"]) == len(norms["torch"]) and all(type(m) is InstanceNorm3dTriton
                                                                  for m in norms["triton"])
    a, b = nets["torch"].state_dict(), nets["triton"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton forward runs on CUDA tensors")
def test_module_on_cuda_matches_pytorch_under_autocast(monkeypatch) -> None:
    """Long rows run the Triton op, short rows (< TRITON_MIN_ROW voxels) PyTorch's; both match PyTorch."""
    import nnunetv2_mambahome.ops.triton_instance_norm as kernels
    from nnunetv2_mambahome.modules.instance_norm import TRITON_MIN_ROW

    calls = []
    real = kernels.instance_norm_triton
    monkeypatch.setattr(kernels, "instance_norm_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    plain = nn.InstanceNorm3d(8, affine=True).cuda()
    fast = InstanceNorm3dTriton(8, affine=True).cuda()
    fast.load_state_dict(plain.state_dict())
    for spatial, triton_runs in (((32, 48, 64), True), ((16, 24, 32), False)):
        assert (spatial[0] * spatial[1] * spatial[2] >= TRITON_MIN_ROW) == triton_runs
        calls.clear()
        x = torch.randn(2, 8, *spatial, device="cuda")
        with torch.autocast("cuda", dtype=torch.float16):
            h = x.half()
            torch.testing.assert_close(fast(h).float(), plain(h).float(), rtol=1e-2, atol=1e-2)
        assert bool(calls) == triton_runs


# channels-last inputs (x lies as (N, *spatial, C)): read and written in that layout by their own kernels
_CL = {3: None, 4: torch.channels_last, 5: torch.channels_last_3d}


def _channels_last(t):
    """t (N, C, *spatial) laid out as (N, *spatial, C) (for 3D tensors: strides (L*C, 1, C))."""
    return t.contiguous(memory_format=_CL[t.dim()]) if _CL[t.dim()] else t.movedim(1, -1).contiguous().movedim(-1, 1)


def _is_channels_last(t) -> bool:
    return t.is_contiguous(memory_format=_CL[t.dim()]) if _CL[t.dim()] else t.movedim(1, -1).is_contiguous()


def _check_channels_last(x, w, b, dy, dtype, rtol=None) -> None:
    """The op on channels-last x against F.instance_norm in float32: y, dx channels-last; every gradient."""
    from nnunetv2_mambahome.ops.triton_instance_norm import instance_norm_triton

    x = _channels_last(x)
    leaves = [t.clone(memory_format=torch.preserve_format).requires_grad_(True) if t is not None else None
              for t in (x, w, b)]
    y = instance_norm_triton(*leaves, eps=1e-5)
    (y.float() * dy.float()).sum().backward()
    ref_leaves = [t.clone().float().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    ref = F.instance_norm(ref_leaves[0], weight=ref_leaves[1], bias=ref_leaves[2], eps=1e-5)
    (ref * dy.float()).sum().backward()
    assert y.dtype == dtype and y.shape == x.shape
    assert _is_channels_last(y) and _is_channels_last(leaves[0].grad) and not y.is_contiguous()
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(y.float(), ref.detach(), **tol)
    for got, want in zip(leaves, ref_leaves):
        if got is not None:
            scale = want.grad.abs().max().item()
            torch.testing.assert_close(got.grad.float(), want.grad, rtol=tol["rtol"], atol=tol["atol"] * max(1, scale))


# 5D and 4D, C = 20 / 3 / 33 (not powers of two; 33 > one 32-channel block), spatial sizes off the tile sizes,
# a (N, L, C)-contiguous 3D input; dy arrives channels-last or contiguous (the op converts it)
@pytest.mark.parametrize("shape,affine,dy_channels_last", [
    ((2, 20, 5, 6, 7), True, True), ((2, 3, 9, 11), False, False), ((1, 33, 6, 13), True, False),
    ((2, 5, 300), True, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_matches_instance_norm_forward_and_every_gradient(shape, affine, dy_channels_last,
                                                                        dtype) -> None:
    x, w, b, dy = _case(shape, dtype, affine)
    _check_channels_last(x, w, b, _channels_last(dy) if dy_channels_last else dy, dtype)


def test_channels_last_float16_with_affine() -> None:
    x, w, b, dy = _case((2, 20, 4, 5, 6), torch.float16, True, seed=2)
    _check_channels_last(x, w, b, dy, torch.float16)


def _many_splits(monkeypatch):
    """Small splits (64 positions) and merges of 4 splits at a time, so a few hundred voxels use several of each."""
    import nnunetv2_mambahome.ops.triton_instance_norm as kernels

    monkeypatch.setattr(kernels, "SPLIT_TARGET", 256)
    monkeypatch.setattr(kernels, "CL_MERGE", 1)
    monkeypatch.setattr(kernels, "CL_MERGE_BLOCK", 4)
    return kernels


def test_channels_last_several_splits_match_and_are_deterministic(monkeypatch) -> None:
    kernels = _many_splits(monkeypatch)
    x, w, b, dy = _case((2, 20, 7, 9, 11), torch.float32, True, seed=3)
    x = _channels_last(x)
    n_splits, block_s = kernels._cl_layout(x)[4:6]
    assert block_s == 64 and n_splits == 11 > kernels.CL_MERGE_BLOCK  # 693 positions: the last split partial
    _check_channels_last(x, w, b, dy, torch.float32)
    runs = []
    for _ in range(2):
        leaves = [t.clone(memory_format=torch.preserve_format).requires_grad_(True) for t in (x, w, b)]
        y = kernels.instance_norm_triton(*leaves)
        (y * dy).sum().backward()
        runs.append([y.detach()] + [t.grad for t in leaves])
    for a, b_ in zip(*runs):
        assert torch.equal(a, b_)


def test_layouts_the_op_tells_apart() -> None:
    """Channels-last takes its kernels; tensors that are also contiguous (C == 1) and other strides the rows
    (the latter copied to contiguous); outputs as the fakes say."""
    from nnunetv2_mambahome.ops.triton_instance_norm import _like, instance_norm_triton, is_channels_last

    x = torch.randn(2, 4, 3, 5, 6, device=DEVICE)
    assert not is_channels_last(x) and is_channels_last(_channels_last(x))
    assert is_channels_last(_channels_last(x[:, :, 0])) and is_channels_last(_channels_last(x[:, :, 0, 0]))
    assert not is_channels_last(_channels_last(x[:, :1]))  # C == 1: contiguous too, the row kernels
    odd = x.transpose(2, 4)  # dense, neither layout
    assert not is_channels_last(odd) and _like(odd).is_contiguous()
    y = instance_norm_triton(odd)
    assert y.is_contiguous()
    torch.testing.assert_close(y, F.instance_norm(odd), rtol=1e-4, atol=1e-4)


def test_channels_last_custom_ops_pass_opcheck() -> None:
    from nnunetv2_mambahome.ops.triton_instance_norm import instance_norm_bwd, instance_norm_fwd

    x, w, b, dy = _case((2, 3, 4, 5, 6), torch.float32, True)
    x = _channels_last(x)
    torch.library.opcheck(instance_norm_fwd, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), 1e-5))
    y, mean, rstd = instance_norm_fwd(x.detach(), w.detach(), b.detach(), 1e-5)
    assert _is_channels_last(y) and mean.shape == rstd.shape == (6,)
    torch.library.opcheck(instance_norm_bwd, (x.detach(), w.detach(), b.detach(), mean, rstd, dy))  # dy standard
    torch.library.opcheck(instance_norm_fwd, (x.detach().requires_grad_(), None, None, 1e-5))
    y, mean, rstd = instance_norm_fwd(x.detach(), None, None, 1e-5)
    torch.library.opcheck(instance_norm_bwd, (x.detach(), None, None, mean, rstd, _channels_last(dy)))


def test_module_runs_the_kernels_on_channels_last_inputs_of_any_row_length(monkeypatch) -> None:
    """Channels-last inputs below TRITON_MIN_ROW take the Triton op (PyTorch's would return a standard tensor);
    standard ones keep PyTorch's forward. The CPU runs it by naming the CPU the Triton device."""
    import nnunetv2_mambahome.modules.instance_norm as norms
    import nnunetv2_mambahome.ops.triton_instance_norm as kernels

    if DEVICE == "cpu":
        monkeypatch.setattr(norms, "_TRITON_DEVICE", "cpu")
    calls = []
    real = kernels.instance_norm_triton
    monkeypatch.setattr(kernels, "instance_norm_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    plain = nn.InstanceNorm3d(20, affine=True).to(DEVICE)
    fast = InstanceNorm3dTriton(20, affine=True).to(DEVICE)
    with torch.no_grad():
        plain.weight.normal_(), plain.bias.normal_()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 20, 4, 5, 6, device=DEVICE) * 3 + 5
    assert x[0, 0].numel() < norms.TRITON_MIN_ROW
    torch.testing.assert_close(fast(x), plain(x))
    assert not calls  # standard layout, short rows: PyTorch's
    y = fast(_channels_last(x))
    assert calls and _is_channels_last(y)
    torch.testing.assert_close(y, plain(x), rtol=1e-4, atol=1e-4)
