"""The Triton selective scan and causal conv1d (run by Triton's interpreter on CPU) against their references.

Outputs and all eight scan gradients are compared with `selective_scan_ref` over mamba-ssm's test grid
(L 128..4096, float32/float16/bfloat16 inputs, with z, D, delta_bias and softplus), odd lengths, every
optional argument left out, the GPU's tile shapes and several chunkings; gradients must be bit-identical
between runs; the custom ops pass `torch.library.opcheck`.
"""
from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from nnunetv2_mambahome.ops import causal_conv1d_ref, selective_scan_ref  # noqa: E402
from nnunetv2_mambahome.ops import triton_causal_conv1d as tconv  # noqa: E402
from nnunetv2_mambahome.ops import triton_selective_scan as tscan  # noqa: E402
from nnunetv2_mambahome.ops.triton_selective_scan import selective_scan_triton  # noqa: E402

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
# norm-relative tolerances: rounding of the low-precision inputs/outputs dominates
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def _inputs(b, d, n, L, dtype=torch.float32, seed=0, parts=NAMES):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=1.0: torch.randn(*s, generator=g) * scale  # noqa: E731
    full = dict(u=r(b, d, L).to(dtype), delta=r(b, d, L, scale=0.5).to(dtype),
                A=-torch.rand(d, n, generator=g) * 4, B=r(b, n, L, scale=2).to(dtype),
                C=r(b, n, L, scale=2).to(dtype), D=r(d), z=r(b, d, L).to(dtype), delta_bias=r(d, scale=0.3))
    return {k: v for k, v in full.items() if k in parts}


def _run(fn, inputs, gout, softplus):
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    out = fn(**leaves, delta_softplus=softplus)
    (out.float() * gout).sum().backward()
    return out.detach(), {k: v.grad for k, v in leaves.items()}


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def _compare(inputs, softplus=True, dtype=torch.float32):
    gout = torch.randn(inputs["u"].shape, generator=torch.Generator().manual_seed(7))
    ref, ref_g = _run(selective_scan_ref, inputs, gout, softplus)
    out, g = _run(selective_scan_triton, inputs, gout, softplus)
    assert out.dtype == inputs["u"].dtype
    assert _rel(out, ref) < TOL[dtype], "output"
    for k in inputs:
        assert g[k].dtype == inputs[k].dtype and g[k].shape == inputs[k].shape, k
        assert torch.isfinite(g[k]).all(), k
        assert _rel(g[k], ref_g[k]) < TOL[dtype], (k, _rel(g[k], ref_g[k]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("L", [128, 256, 512, 1024, 2048, 4096])
def test_scan_matches_reference_on_mamba_ssm_grid(L, dtype) -> None:
    _compare(_inputs(2, 4, 8, L, dtype, seed=L), dtype=dtype)


@pytest.mark.parametrize("L", [1, 7, 37, 100, 257, 1000])
def test_scan_odd_lengths(L) -> None:
    _compare(_inputs(1, 3, 16, L, seed=L))


@pytest.mark.parametrize("parts,softplus", [
    (("u", "delta", "A", "B", "C"), False),
    (("u", "delta", "A", "B", "C", "D"), True),
    (("u", "delta", "A", "B", "C", "z"), False),
    (("u", "delta", "A", "B", "C", "delta_bias"), True),
], ids=["bare", "D", "z", "bias"])
def test_scan_optional_arguments(parts, softplus) -> None:
    inputs = _inputs(2, 5, 4, 300, seed=3, parts=parts)
    if not softplus:  # step sizes must be positive without the softplus
        inputs["delta"] = inputs["delta"].abs()
    _compare(inputs, softplus=softplus)


def test_scan_with_gpu_tiles_and_many_chunks(monkeypatch) -> None:
    """The tile shapes used on GPUs, and a chunking of L into many chunks (the chained states), give the same."""
    monkeypatch.setitem(tscan.TILES, "cpu", tscan.TILES["cuda"])
    monkeypatch.setattr(tscan, "_multiprocessors", lambda device: 16)
    inputs = _inputs(1, 40, 4, 150, seed=11)  # 2 channel blocks of 32, 5 tiles of 32
    assert tscan.ScanPlan(inputs["u"], 4, "bwd").n_chunks > 1
    _compare(inputs)


def test_scan_chunking_does_not_change_the_result(monkeypatch) -> None:
    inputs = _inputs(1, 4, 8, 2048, seed=5)
    outs = []
    chunks = []
    for sms in (0, 64):  # one chunk vs one chunk per tile
        monkeypatch.setattr(tscan, "_multiprocessors", lambda device, sms=sms: sms)
        outs.append(selective_scan_triton(**inputs, delta_softplus=True))
        chunks.append(tscan.ScanPlan(inputs["u"], 8, "fwd").n_chunks)
    assert chunks[0] == 1 and chunks[1] == tscan.ScanPlan(inputs["u"], 8, "fwd").n_tiles > 1
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_scan_strided_inputs() -> None:
    """Non-contiguous views (the mixer passes B, C as slices of x_dbl, u/z as halves of xz) are read in place."""
    inputs = _inputs(2, 4, 4, 90, seed=2)
    big = torch.randn(2, 3 * 4, 90)
    big[:, 4:8] = inputs["B"]
    big[:, 8:12] = inputs["C"]
    strided = dict(inputs, B=big[:, 4:8], C=big[:, 8:12], u=torch.cat([inputs["u"], inputs["z"]], 1)[:, :4])
    assert not strided["B"].is_contiguous()
    torch.testing.assert_close(selective_scan_triton(**strided, delta_softplus=True),
                               selective_scan_triton(**inputs, delta_softplus=True))


def test_scan_gradients_are_deterministic() -> None:
    inputs = _inputs(2, 6, 8, 600, seed=4)
    gout = torch.randn(2, 6, 600)
    first = _run(selective_scan_triton, inputs, gout, True)[1]
    second = _run(selective_scan_triton, inputs, gout, True)[1]
    for k in inputs:
        assert torch.equal(first[k], second[k]), k


@pytest.mark.parametrize("change,match", [
    (lambda a: dict(a, u=a["u"][0]), "must be \\(batch, dim, L\\)"),
    (lambda a: dict(a, B=a["B"][:, None]), "input-dependent"),
    (lambda a: dict(a, A=a["A"].to(torch.complex64)), "must be real"),
    (lambda a: dict(a, D=a["D"][:2]), "D must be"),
    (lambda a: dict(a, z=a["z"].to(torch.int32)), "dtype"),
])
def test_scan_bad_input_is_a_clear_error(change, match) -> None:
    with pytest.raises(ValueError, match="triton backend") as err:
        selective_scan_triton(**change(_inputs(1, 3, 4, 10)), delta_softplus=True)
    assert err.match(match)


def test_scan_custom_ops_pass_opcheck() -> None:
    args = {k: v.requires_grad_(True) for k, v in _inputs(1, 3, 4, 40, seed=1).items()}
    ordered = [args[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    torch.library.opcheck(selective_scan_triton.fwd, (*ordered, True, True))
    torch.library.opcheck(selective_scan_triton.fwd, (*ordered[:5], None, None, None, False, True))
    plain = [t.detach() for t in ordered]
    _, saved = selective_scan_triton.forward(*plain, True, True)
    torch.library.opcheck(selective_scan_triton.bwd, (*plain, True, torch.randn(1, 3, 40), saved))


@pytest.mark.parametrize("b,d,L,W,bias", [(1, 3, 1, 4, True), (2, 20, 300, 4, True), (1, 5, 700, 3, False)])
def test_causal_conv1d_matches_reference(b, d, L, W, bias) -> None:
    g = torch.Generator().manual_seed(L)
    xz = torch.randn(b, 2 * d, L, generator=g)
    x = xz[:, :d]  # strided, as the mixer passes it
    w = torch.randn(d, W, generator=g)
    bb = torch.randn(d, generator=g) if bias else None
    gout = torch.randn(b, d, L, generator=g)
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, w, bb)]
    ref = causal_conv1d_ref(*leaves)
    (ref * gout).sum().backward()
    torch.testing.assert_close(tconv.causal_conv1d_triton.fwd(x, w, bb), ref.detach(), rtol=1e-5, atol=1e-5)
    dx, dw, db = tconv.causal_conv1d_triton.bwd(x, w, bb, gout)
    torch.testing.assert_close(dx, leaves[0].grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw, leaves[1].grad, rtol=1e-5, atol=1e-4)
    if bias:
        torch.testing.assert_close(db, leaves[2].grad, rtol=1e-5, atol=1e-4)
    else:
        assert db is None


def test_causal_conv1d_custom_ops_pass_opcheck() -> None:
    x, w, b = torch.randn(2, 5, 30), torch.randn(5, 4), torch.randn(5)
    torch.library.opcheck(torch.ops.mambahome.causal_conv1d_triton_fwd,
                          (x.requires_grad_(), w.requires_grad_(), b.requires_grad_()))
    torch.library.opcheck(torch.ops.mambahome.causal_conv1d_triton_bwd,
                          (x.detach(), w.detach(), b.detach(), torch.randn(2, 5, 30)))
