"""The Triton Dynamic Tanh against `ops.dyt_ref` (interpreted on CPUs, compiled on GPUs), its custom ops, and the
module: the NNUNETV2_MAMBAHOME_NORM switch keeps parameters and PyTorch's numerics on CPU tensors exactly."""
from __future__ import annotations

import pytest
import torch

from nnunetv2_mambahome.modules import DynamicTanh, MambaHoMEBlock, ResidualMambaLayer
from nnunetv2_mambahome.modules.instance_norm import NORM_ENV
from nnunetv2_mambahome.ops.dyt_ref import dyt_ref

triton = pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HALF_ULP = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}  # relative spacing of the dtype's values


def _case(shape, dtype=torch.float32, out_dtype=None, alpha=0.7, seed=0):
    """(x, alpha, weight, bias, dy) on DEVICE; dy in the output dtype, as autograd hands it to the op."""
    g = torch.Generator().manual_seed(seed)
    C = shape[-1]
    x = (torch.randn(shape, generator=g) * 2).to(dtype)
    w, b = torch.randn(C, generator=g), torch.randn(C, generator=g)
    dy = torch.randn(shape, generator=g).to(out_dtype or dtype)
    return [t.to(DEVICE) for t in (x, torch.tensor([alpha]), w, b, dy)]


def _run(fn, x, alpha, w, b, dy, **kwargs):
    """Output and the gradients of (x, alpha, weight, bias) of fn for the cotangent dy."""
    leaves = [t.clone().requires_grad_(True) for t in (x, alpha, w, b)]
    y = fn(*leaves, **kwargs)
    (y.double() * dy.double()).sum().backward()
    return y.detach(), [t.grad for t in leaves]


def _truth(x, alpha, w, b, dy):
    """dyt_ref in float64 on the same (rounded) inputs."""
    return _run(dyt_ref, *(t.double() for t in (x, alpha, w, b)), dy)


# C not a power of two (48, 320), one row, odd row counts, 2D and 3D (batch, L, C)
SHAPES = [(2, 37, 48), (1, 320), (101, 64), (3, 7, 128)]


@pytest.mark.parametrize("shape", SHAPES)
def test_float32_matches_reference_forward_and_every_gradient(shape) -> None:
    from nnunetv2_mambahome.ops.triton_dyt import dyt_triton

    case = _case(shape)
    y, grads = _run(dyt_triton, *case)
    ref, ref_grads = _run(dyt_ref, *case)
    assert y.dtype == torch.float32 and y.shape == case[0].shape
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, ref_grads):  # dweight, dbias, dalpha: sums in another order
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * max(1.0, want.abs().max().item()))


@pytest.mark.parametrize("dtype,out_dtype", [(torch.float32, torch.bfloat16), (torch.bfloat16, None),
                                             (torch.float16, None), (torch.float32, torch.float16)])
def test_half_inputs_or_output_round_once_and_beat_pytorchs_half_math(dtype, out_dtype) -> None:
    """Computed in float32 and rounded once at the store: the output and dx are within one ulp of their dtype of
    the exact value on the same inputs, the parameter gradients (float32 sums) within float32 accumulation
    error, and the output at most as far from exact as PyTorch's math in the half dtype (today's path)."""
    from nnunetv2_mambahome.ops.triton_dyt import dyt_triton

    case = _case((3, 41, 48), dtype, out_dtype)
    y, grads = _run(dyt_triton, *case, out_dtype=out_dtype)
    today, _ = _run(dyt_ref, *case, out_dtype=out_dtype)
    exact, exact_grads = _truth(*case)
    half = out_dtype or dtype
    assert y.dtype == half and grads[0].dtype == dtype
    torch.testing.assert_close(y.double(), exact, rtol=HALF_ULP[half], atol=1e-6)
    assert (y.double() - exact).abs().max() <= (today.double() - exact).abs().max()
    dx_rtol = HALF_ULP.get(dtype, 1e-6)
    torch.testing.assert_close(grads[0].double(), exact_grads[0], rtol=dx_rtol, atol=1e-6)
    for got, want in zip(grads[1:], exact_grads[1:]):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * max(1.0, want.abs().max().item()))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, on the interpreter's NaN
def test_tanh_is_accurate_in_float32() -> None:
    """tanh from exp: the Taylor branch below |z| = 0.3 (where 1 - exp(-2|z|) cancels), the exp branch above,
    saturation, and NaN; within 4 float32 ulp of the exact value (torch.tanh on CPUs: 0.5)."""
    from nnunetv2_mambahome.ops.triton_dyt import dyt_triton

    z = torch.cat([torch.linspace(-10, 10, 20001), torch.logspace(-30, 0, 3001), -torch.logspace(-30, 0, 3001),
                   torch.tensor([50.0, -50.0, float("inf"), -float("inf")])])
    ones = torch.ones(1, device=DEVICE)
    t = dyt_triton(z[:, None].to(DEVICE), ones, ones, torch.zeros(1, device=DEVICE)).cpu().flatten()
    torch.testing.assert_close(t.double(), torch.tanh(z.double()), rtol=5e-7, atol=0)
    nan = torch.full((1, 1), float("nan"), device=DEVICE)
    assert dyt_triton(nan, ones, ones, torch.zeros(1, device=DEVICE)).isnan().all()


def _many_parts(monkeypatch) -> None:
    """Small tiles and at most 3 backward programs: each walks several tiles, the last ones partly or wholly
    past the rows, and 3 partial sums are reduced."""
    from nnunetv2_mambahome.ops import triton_dyt

    monkeypatch.setattr(triton_dyt, "TILE", 256)
    monkeypatch.setattr(triton_dyt, "MAX_PARTS", 3)


def test_backward_over_several_tiles_per_program(monkeypatch) -> None:
    from nnunetv2_mambahome.ops.triton_dyt import dyt_triton

    _many_parts(monkeypatch)
    case = _case((2, 37, 48))  # 74 rows of 4-row tiles: 19 tiles, 7 per program, the last 2 past the rows
    y, grads = _run(dyt_triton, *case)
    ref, ref_grads = _run(dyt_ref, *case)
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * max(1.0, want.abs().max().item()))


def test_gradients_are_deterministic(monkeypatch) -> None:
    from nnunetv2_mambahome.ops.triton_dyt import dyt_triton

    _many_parts(monkeypatch)
    case = _case((2, 37, 48), seed=1)
    first, second = (_run(dyt_triton, *case)[1] for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_empty_input() -> None:
    from nnunetv2_mambahome.ops.triton_dyt import dyt_triton

    y, grads = _run(dyt_triton, *_case((0, 64)))
    assert y.shape == (0, 64) and grads[0].shape == (0, 64)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads[1:])


def test_custom_ops_pass_opcheck() -> None:
    from nnunetv2_mambahome.ops.triton_dyt import dyt_bwd, dyt_fwd

    x, alpha, w, b, dy = _case((2, 5, 48), out_dtype=torch.bfloat16)
    torch.library.opcheck(dyt_fwd, (x.requires_grad_(), alpha.requires_grad_(), w.requires_grad_(),
                                    b.requires_grad_(), torch.bfloat16))
    torch.library.opcheck(dyt_bwd, (x.detach(), alpha.detach(), w.detach(), dy))


def test_bad_input_names_the_op() -> None:
    from nnunetv2_mambahome.ops.triton_dyt import dyt_bwd, dyt_triton

    x, alpha, w, b, dy = _case((4, 8))
    bad = {"expected x \\(\\.\\.\\., C\\) of float32/float16/bfloat16": (x.double(), alpha, w, b),
           "expected weight and bias of shape \\(8,\\)": (x, alpha, w[:5], b),
           "expected a 1-element alpha": (x, alpha.repeat(2), w, b),
           "expected bias of shape \\(8,\\) and a float32/float16/bfloat16 out_dtype": (x, alpha, w, b[:5])}
    for message, args in bad.items():
        with pytest.raises(ValueError, match="dyt \\(triton\\) forward: " + message):
            dyt_triton(*args)
    with pytest.raises(ValueError, match="dyt \\(triton\\) forward: .* got bias \\(8,\\), torch.int32"):
        dyt_triton(x, alpha, w, b, out_dtype=torch.int32)
    with pytest.raises(ValueError, match="dyt \\(triton\\) backward: expected dy of x's shape \\(4, 8\\)"):
        dyt_bwd(x, alpha, w, dy[:2])


def _todays_forward(m: DynamicTanh, x: torch.Tensor) -> torch.Tensor:
    """DynamicTanh.forward as it was before the Triton path (the golden fixtures' numerics)."""
    alpha = m.alpha.clamp(*m.alpha_range).to(x.dtype)
    return torch.addcmul(m.bias.to(x.dtype), torch.tanh(alpha * x), m.weight.to(x.dtype))


@pytest.mark.parametrize("out_dtype", [None, torch.bfloat16])
def test_module_on_cpu_is_todays_formula_exactly(monkeypatch, out_dtype) -> None:
    """With the switch on `triton`, CPU tensors still take PyTorch's path, bit for bit (outputs and gradients),
    and `out_dtype` is today's `DyT(x.to(dtype))`."""
    monkeypatch.setenv(NORM_ENV, "triton")
    torch.manual_seed(0)
    m = DynamicTanh(48)
    assert m.use_triton
    with torch.no_grad():
        m.weight.normal_()
        m.bias.normal_()
    x = torch.randn(2, 9, 48)
    results = []
    for forward in (lambda a: m(a, out_dtype=out_dtype), lambda a: _todays_forward(m, a.to(out_dtype or a.dtype))):
        m.zero_grad(set_to_none=True)
        leaf = x.clone().requires_grad_(True)
        y = forward(leaf)
        y.float().square().sum().backward()
        results.append([y, leaf.grad] + [p.grad for p in m.parameters()])
    assert results[0][0].dtype == (out_dtype or torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def _module_takes_the_triton_path(monkeypatch) -> list:
    """NNUNETV2_MAMBAHOME_NORM=triton, CPU tensors too (the interpreter runs the kernels); returns the list of
    the output dtypes the module's Triton calls were asked for, to prove that the path was taken."""
    from nnunetv2_mambahome.ops import triton_dyt

    monkeypatch.setenv(NORM_ENV, "triton")
    monkeypatch.setattr(DynamicTanh, "triton_devices", ("cuda", "cpu"))
    calls, dyt_triton = [], triton_dyt.dyt_triton

    def counted(x, alpha, weight, bias, out_dtype=None):
        calls.append(out_dtype)
        return dyt_triton(x, alpha, weight, bias, out_dtype)

    monkeypatch.setattr(triton_dyt, "dyt_triton", counted)
    return calls


@pytest.mark.parametrize("alpha", [0.01, 5.0])
def test_alpha_outside_the_clamp_range_gets_no_gradient_on_the_triton_path(monkeypatch, alpha) -> None:
    calls = _module_takes_the_triton_path(monkeypatch)
    m = DynamicTanh(48).to(DEVICE)
    with torch.no_grad():
        m.alpha.fill_(alpha)
    x = torch.randn(3, 48, device=DEVICE)
    y = m(x)
    y.square().sum().backward()
    clamped = min(max(alpha, 0.1), 2.0)
    torch.testing.assert_close(y, torch.tanh(clamped * x), rtol=1e-6, atol=1e-6)  # weight 1, bias 0
    assert torch.equal(m.alpha.grad, torch.zeros(1, device=DEVICE))
    assert m.weight.grad.abs().sum() > 0 and calls == [None]


def test_the_switch_keeps_the_state_dict(monkeypatch) -> None:
    """The choice is a plain attribute: a block built either way has the same parameters, names and values."""
    blocks = {}
    for choice in ("torch", "triton"):
        monkeypatch.setenv(NORM_ENV, choice)
        torch.manual_seed(0)
        blocks[choice] = MambaHoMEBlock(16, depth=1, group_size=8, num_experts=2)
    dyts = {c: [m for m in b.modules() if isinstance(m, DynamicTanh)] for c, b in blocks.items()}
    assert len(dyts["torch"]) == 2 and not any(m.use_triton for m in dyts["torch"])
    assert all(m.use_triton for m in dyts["triton"])
    a, b = blocks["torch"].state_dict(), blocks["triton"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert DynamicTanh(16).state_dict().keys() == {"alpha", "weight", "bias"}


def test_block_with_triton_dyt_matches_pytorch_dyt(monkeypatch) -> None:
    """Both call sites (Mamba layer with the token dtype as out_dtype, HoME layer in float32) through the
    Triton kernels give the block's output and input gradient of PyTorch's DyT, in float32."""
    calls = _module_takes_the_triton_path(monkeypatch)
    torch.manual_seed(0)
    block = MambaHoMEBlock(16, depth=1, group_size=8, num_experts=2).to(DEVICE)
    x = torch.randn(2, 16, 4, 4, 3, device=DEVICE)
    results = []
    for use_triton in (True, False):
        for m in block.modules():
            if isinstance(m, DynamicTanh):
                m.use_triton = use_triton
        leaf = x.clone().requires_grad_(True)
        y = block(leaf)
        y.square().sum().backward()
        results.append((y.detach(), leaf.grad))
    assert calls == [torch.float32, torch.float32]  # Mamba layer (token dtype float32 here), HoME layer
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_mamba_layer_under_autocast_fuses_the_cast_to_bfloat16(monkeypatch) -> None:
    """Under autocast the Mamba layer's DyT reads the float32 residual stream and writes the bfloat16 token
    dtype itself; the layer's update x' - x is PyTorch's DyT path's to bfloat16 accuracy (that path rounds
    x, alpha*x and tanh to bfloat16 first)."""
    calls = _module_takes_the_triton_path(monkeypatch)
    torch.manual_seed(0)
    layer = ResidualMambaLayer(16).to(DEVICE)
    x = torch.randn(2, 30, 16, device=DEVICE)
    updates = []
    for use_triton in (True, False):
        layer.norm.use_triton = use_triton
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            updates.append(layer(x) - x)
    assert calls == [torch.bfloat16]
    torch.testing.assert_close(updates[0], updates[1], rtol=2e-2, atol=2e-2 * updates[1].abs().max().item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the module's Triton path runs on CUDA tensors")
def test_module_on_cuda_takes_the_triton_path_under_autocast(monkeypatch) -> None:
    monkeypatch.setenv(NORM_ENV, "triton")
    m = DynamicTanh(64).cuda()
    x = torch.randn(2, 300, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        y = m(x, out_dtype=torch.bfloat16)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), dyt_ref(x, m.alpha.clamp(0.1, 2.0), m.weight, m.bias),
                               rtol=2 ** -8, atol=1e-6)
