"""The scan backends (torch chunked, triton, cuda) agree with the naive sequential scan, forward and backward;
backend choice and the mixer bodies."""
from __future__ import annotations

import importlib

import pytest
import torch

from nnunetv2_mambahome.ops import (ENV_VAR, ScanBackendError, mamba_inner_unfused, requested_backend,
                                    resolve_backend, selective_scan_chunked, selective_scan_ref)
from nnunetv2_mambahome.ops.cuda_kernels import load_cuda_kernels

mamba_inner_module = importlib.import_module("nnunetv2_mambahome.ops.mamba_inner")


def _inputs(b, d, n, L, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(device)
    return dict(u=r(b, d, L), delta=r(b, d, L, scale=0.5), A=-torch.rand(d, n, generator=g).to(device) * 4,
                B=r(b, n, L, scale=2), C=r(b, n, L, scale=2), D=r(d), z=r(b, d, L), delta_bias=r(d, scale=0.3))


def _grads(fn, inputs, gout, **kw):
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    out = fn(**leaves, delta_softplus=True, **kw)
    (out * gout).sum().backward()
    return out.detach(), {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("b,d,n,L,chunk", [(1, 4, 4, 1, None), (2, 6, 8, 37, 8), (3, 5, 16, 100, None),
                                           (2, 4, 4, 64, 16), (2, 3, 2, 129, 32), (1, 2, 3, 7, 16)])
def test_chunked_matches_reference(b, d, n, L, chunk) -> None:
    inputs = _inputs(b, d, n, L, seed=L)
    gout = torch.randn(b, d, L)
    y_ref, g_ref = _grads(selective_scan_ref, inputs, gout)
    y, g = _grads(selective_scan_chunked, inputs, gout, chunk_size=chunk)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    for k in inputs:
        scale = g_ref[k].abs().max().item()
        torch.testing.assert_close(g[k], g_ref[k], rtol=1e-4, atol=1e-5 * max(1.0, scale), msg=k)


def test_reference_gradient_matches_finite_differences() -> None:
    """The naive reference itself is checked against numerical differentiation (float64)."""
    inp = {k: v.double().requires_grad_(True) for k, v in _inputs(1, 2, 3, 6, seed=3).items()}

    def f(u, delta, A, B, C, D, z, delta_bias):
        # selective_scan_ref computes in float32; use a float64 copy of its recurrence for gradcheck
        delta = torch.nn.functional.softplus(delta + delta_bias[:, None])
        h = u.new_zeros(u.shape[0], A.shape[0], A.shape[1])
        ys = []
        for t in range(u.shape[2]):
            h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
            ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
        return (torch.stack(ys, 2) + u * D[:, None]) * torch.nn.functional.silu(z)

    assert torch.autograd.gradcheck(f, tuple(inp.values()))
    y64 = f(*inp.values())
    y32 = selective_scan_ref(**{k: v.detach().float() for k, v in inp.items()}, delta_softplus=True)
    torch.testing.assert_close(y32.double(), y64.detach(), rtol=1e-5, atol=1e-5)


def test_long_sequence_runs_without_full_state() -> None:
    """A 65k-token scan works and matches a coarser-chunked run of itself (no L x D x N tensor needed)."""
    inputs = _inputs(1, 8, 16, 65536, seed=1)
    a = selective_scan_chunked(**inputs, delta_softplus=True)
    b = selective_scan_chunked(**inputs, delta_softplus=True, chunk_size=64)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_backend_selection(monkeypatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert requested_backend() == "auto"
    cpu = torch.device("cpu")
    assert resolve_backend(cpu).name == "torch"
    assert resolve_backend(cpu) is resolve_backend(cpu), "resolved once, then looked up"
    monkeypatch.setenv(ENV_VAR, "torch")
    assert resolve_backend(cpu).name == "torch"
    monkeypatch.setenv(ENV_VAR, "cuda")
    with pytest.raises(ScanBackendError, match="nnunetv2-mambahome\\[cuda\\]"):
        resolve_backend(cpu)
    monkeypatch.setenv(ENV_VAR, "fast")
    with pytest.raises(ScanBackendError, match="unknown scan backend"):
        resolve_backend(cpu)


# Triton binds its kernels to the interpreter or to the GPU compiler when their module is first imported, for the
# whole process: a test that switches the interpreter on would leave later GPU tests with interpreted kernels.
# On GPU machines the same checks run compiled (test_gpu_backends_match_torch_backend, test_registered_gpu_ops_*).
interpreter_only = pytest.mark.skipif(torch.cuda.is_available(),
                                      reason="CPU-interpreter test; its GPU counterparts run compiled here")


@interpreter_only
def test_triton_backend_needs_a_gpu_or_the_interpreter(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ScanBackendError, match="CUDA GPUs only"):
        resolve_backend(torch.device("cpu"), "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    backend = resolve_backend(torch.device("cpu"), "triton")
    assert backend.name == "triton" and "forced" in backend.reason


def test_auto_on_a_gpu_takes_the_first_usable_backend_and_says_why(monkeypatch) -> None:
    """Without a GPU here, the choice itself is checked with the availability probe replaced."""
    from nnunetv2_mambahome.ops import backends

    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(backends, "_RESOLVED", {})
    monkeypatch.setattr(backends, "_normalised", lambda d: d)
    monkeypatch.setattr(backends, "_build", lambda name, device, reason: backends.ScanBackend(name, reason, None, None))
    monkeypatch.setattr(backends, "_unavailable", lambda name, device: None)
    first, second = backends.AUTO_ORDER
    assert resolve_backend(gpu, "auto").name == first
    monkeypatch.setattr(backends, "_RESOLVED", {})
    monkeypatch.setattr(backends, "_unavailable", lambda name, device: None if name == second else "probe failed")
    chosen = resolve_backend(gpu, "auto")
    assert chosen.name == second and f"fell back: {first} unavailable: probe failed" in chosen.reason
    monkeypatch.setattr(backends, "_RESOLVED", {})
    monkeypatch.setattr(backends, "_unavailable", lambda name, device: "missing")
    chosen = resolve_backend(gpu, "auto")
    assert chosen.name == "torch" and "SLOW FALLBACK" in chosen.reason


def test_each_gpu_backend_takes_its_own_conv(monkeypatch) -> None:
    """`triton` never uses causal-conv1d's compiled conv (it is the backend without compiled extensions), even
    where causal-conv1d is installed; `cuda` takes it there and the Triton conv otherwise."""
    from types import SimpleNamespace

    from nnunetv2_mambahome.ops import backends

    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(backends, "_triton_unavailable", lambda device: None)
    monkeypatch.setattr(backends, "load_cuda_kernels", lambda: SimpleNamespace(conv_fwd=object()))
    assert backends._conv_kernel("triton", gpu).name == "triton"
    assert backends._conv_kernel("cuda", gpu).name == "causal-conv1d"
    monkeypatch.setattr(backends, "load_cuda_kernels", lambda: SimpleNamespace(conv_fwd=None))
    assert backends._conv_kernel("cuda", gpu).name == "triton"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("L", [1, 37, 2048, 5000])
def test_gpu_backends_match_torch_backend(L, backend) -> None:
    if backend == "cuda" and load_cuda_kernels() is None:
        pytest.skip("needs the compiled mamba-ssm kernels")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from nnunetv2_mambahome.modules import MambaMixer

    torch.manual_seed(0)
    mixer = MambaMixer(32).cuda()
    x = torch.randn(2, L, 32, device="cuda")
    outs, grads = [], []
    for name in ("torch", backend):
        mixer.backend = name
        xi = x.clone().requires_grad_(True)
        mixer.zero_grad()
        out = mixer(xi)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([xi.grad] + [p.grad.clone() for p in mixer.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-3, atol=1e-4)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * max(1.0, b.abs().max().item()))


def test_mamba_inner_unfused_matches_reference_composition() -> None:
    """The unfused mixer body equals conv -> projections -> selective_scan_ref -> out_proj written out."""
    torch.manual_seed(0)
    b, L, d_inner, n, r, d_model = 2, 33, 8, 4, 2, 5
    xz = torch.randn(b, 2 * d_inner, L)
    conv_w, conv_b = torch.randn(d_inner, 1, 4), torch.randn(d_inner)
    x_proj_w, dt_w, dt_b = torch.randn(r + 2 * n, d_inner), torch.randn(d_inner, r), torch.randn(d_inner)
    out_w, A, D = torch.randn(d_model, d_inner), -torch.rand(d_inner, n), torch.randn(d_inner)
    got = mamba_inner_unfused(xz, conv_w, conv_b, x_proj_w, dt_w, dt_b, out_w, None, A, D,
                              scan=selective_scan_chunked)
    x, z = xz.chunk(2, 1)
    x = torch.nn.functional.silu(torch.nn.functional.conv1d(x, conv_w, conv_b, padding=3, groups=d_inner)[..., :L])
    dbl = torch.einsum("bdl,ed->bel", x, x_proj_w)
    dt, Bm, Cm = dbl[:, :r], dbl[:, r:r + n], dbl[:, r + n:]
    y = selective_scan_ref(x, torch.einsum("bkl,dk->bdl", dt, dt_w), A, Bm, Cm, D, z, dt_b, True)
    torch.testing.assert_close(got, y.transpose(1, 2) @ out_w.T, rtol=1e-4, atol=1e-4)


def test_backward_in_groups_of_chunks_matches_reference(monkeypatch) -> None:
    """A tiny state budget forces the backward to recompute states one chunk at a time; gradients are unchanged."""
    module = importlib.import_module("nnunetv2_mambahome.ops.selective_scan_chunked")
    monkeypatch.setitem(module._STATE_BUDGET, "cpu", 1)
    inputs = _inputs(2, 3, 4, 70, seed=5)
    gout = torch.randn(2, 3, 70)
    y_ref, g_ref = _grads(selective_scan_ref, inputs, gout)
    y, g = _grads(selective_scan_chunked, inputs, gout, chunk_size=8)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    for k in inputs:
        scale = g_ref[k].abs().max().item()
        torch.testing.assert_close(g[k], g_ref[k], rtol=1e-4, atol=1e-5 * max(1.0, scale), msg=k)


@interpreter_only
@pytest.mark.parametrize("out_bias", [False, True])
def test_fused_triton_mixer_matches_unfused_torch_mixer(monkeypatch, out_bias) -> None:
    """The whole mixer (conv, projections, scan, gate, out_proj) fwd + every gradient, triton vs torch backend."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from nnunetv2_mambahome.modules import MambaMixer

    monkeypatch.setattr(mamba_inner_module, "_MIN_CHUNK", 16)  # the split-K weight gradients: 9 chunks + a tail
    torch.manual_seed(0)
    mixer = MambaMixer(8, bias=out_bias)
    x = torch.randn(2, 150, 8)
    results = {}
    for backend in ("torch", "triton"):
        mixer.backend = backend
        mixer.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = mixer(xi)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results[backend] = (out.detach(), xi.grad, {k: p.grad.clone() for k, p in mixer.named_parameters()})
    (o_t, dx_t, g_t), (o_f, dx_f, g_f) = results["torch"], results["triton"]
    torch.testing.assert_close(o_f, o_t, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dx_f, dx_t, rtol=1e-4, atol=1e-5)
    for k in g_t:
        torch.testing.assert_close(g_f[k], g_t[k], rtol=1e-4, atol=1e-5 * max(1.0, g_t[k].abs().max().item()), msg=k)


@pytest.mark.parametrize("length, min_chunk", [(1, 4), (37, 64), (37, 4), (64, 16), (1000, 7), (5000, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_contract_tokens_matches_a_float64_contraction(monkeypatch, length, min_chunk, dtype) -> None:
    """The split-K weight gradient over strided and contiguous inputs: no chunk, chunks with and without a tail,
    the 128-chunk cap; float32 sums rounded once to the input dtype."""
    monkeypatch.setattr(mamba_inner_module, "_MIN_CHUNK", min_chunk)
    torch.manual_seed(0)
    a = torch.randn(3, length, 5).to(dtype).transpose(1, 2)  # (3, 5, L) with L strided, like dout^T
    b = torch.randn(3, 4, length).to(dtype)
    want = torch.einsum("bml,bnl->mn", a.double(), b.double())
    got = mamba_inner_module.contract_tokens(a, b)
    assert got.dtype == dtype and got.shape == (5, 4)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * want.abs().max().item())


@pytest.mark.parametrize("bias", [False, True])
def test_tokens_linear_is_f_linear_of_the_transposed_tokens(bias) -> None:
    torch.manual_seed(0)
    y, w = torch.randn(2, 6, 40), torch.randn(3, 6)
    b = torch.randn(3) if bias else None
    got = mamba_inner_module.tokens_linear(y, w, b)
    torch.testing.assert_close(got, torch.nn.functional.linear(y.transpose(1, 2), w, b))
    assert got.is_contiguous()


@pytest.mark.parametrize("length", [1, 40, 3000])
def test_channels_first_linear_is_the_transposed_linear_with_its_gradients(monkeypatch, length) -> None:
    """in_proj's layout: (b, L, d) -> (b, 2*d_inner, L) contiguous; gradients (split-K weight gradient
    included) checked numerically in float64."""
    monkeypatch.setattr(mamba_inner_module, "_MIN_CHUNK", 256)
    torch.manual_seed(0)
    x = torch.randn(2, length, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = mamba_inner_module.channels_first_linear(x, w)
    assert y.shape == (2, 5, length) and y.stride(-1) == 1 and y.is_contiguous()
    torch.testing.assert_close(y, torch.nn.functional.linear(x, w).transpose(1, 2))
    if length < 3000:
        assert torch.autograd.gradcheck(mamba_inner_module.channels_first_linear, (x, w))
    gy = torch.randn_like(y)
    dx, dw = torch.autograd.grad(y, (x, w), gy)
    want_dx, want_dw = torch.autograd.grad(torch.nn.functional.linear(x, w).transpose(1, 2), (x, w), gy)
    torch.testing.assert_close(dx, want_dx)
    torch.testing.assert_close(dw, want_dw)


def test_length_one_sequences_reach_the_extensions_with_unit_stride() -> None:
    """A one-token GEMM output may carry any stride on L; mamba-ssm and causal-conv1d need stride 1 there
    (causal-conv1d took (di, 1, 2di) for its channel-last layout and failed, H200)."""
    from nnunetv2_mambahome.ops.cuda_kernels import _l_contiguous

    t = torch.randn(2, 6, 1).as_strided((2, 6, 1), (6, 1, 6))
    assert t.is_contiguous() and t.contiguous().stride(-1) == 6  # what contiguous() leaves alone
    got = _l_contiguous(t)
    assert got.stride() == (6, 1, 1) and got.data_ptr() == t.data_ptr() and torch.equal(got, t)
    strided = torch.randn(2, 5, 6).transpose(1, 2)
    assert _l_contiguous(strided).stride(-1) == 1 and torch.equal(_l_contiguous(strided), strided)


def test_registered_scan_ops_return_the_layout_their_fake_promises() -> None:
    """A kernel may lay its output out like a strided input (mamba-ssm's is `empty_like(z)`, z a view of xz);
    the registered op still returns what its fake says (contiguous), or torch.compile's code fails its stride
    assertions. opcheck compares real and fake layouts."""
    from nnunetv2_mambahome.ops.scan_ops import define_scan_kernel

    def fwd_impl(u, delta, A, B, C, D, z, delta_bias, softplus, save):
        out = torch.empty_like(z)  # z's strides, like mamba-ssm
        out.copy_(selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, softplus))
        return out, []

    def bwd_impl(*args):
        raise AssertionError("not differentiated here")

    kernel = define_scan_kernel("layout_test", fwd_impl, bwd_impl, lambda u, A, z, save: [], lambda *a: None)
    g = torch.Generator().manual_seed(0)
    b, d, n, L = 2, 3, 4, 20
    xz = torch.randn(b, 2 * d, L, generator=g)
    z = xz.transpose(0, 1).contiguous().transpose(0, 1)[:, d:]  # strides (L, b*L, 1), as the mixer's z
    u, delta = torch.randn(b, d, L, generator=g), torch.rand(b, d, L, generator=g)
    A, B, C = -torch.rand(d, n, generator=g), torch.randn(b, n, L, generator=g), torch.randn(b, n, L, generator=g)
    out = kernel.fwd(u, delta, A, B, C, None, z, None, True, False)[0]
    assert not z.is_contiguous() and out.is_contiguous()
    torch.testing.assert_close(out, selective_scan_ref(u, delta, A, B, C, None, z, None, True))
    torch.library.opcheck(kernel.fwd, (u, delta, A, B, C, None, z, None, True, False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_registered_gpu_ops_pass_opcheck(backend) -> None:
    """The scan and conv custom ops of each GPU backend: schema, fake (meta) layouts, autograd registration and
    torch.compile's checks (`torch.library.opcheck`), with the mixer's strided z and conv input."""
    from nnunetv2_mambahome.ops import resolve_backend

    if backend == "cuda" and load_cuda_kernels() is None:
        pytest.skip("needs the compiled mamba-ssm kernels")
    chosen = resolve_backend(torch.device("cuda"), backend)
    g = torch.Generator(device="cuda").manual_seed(0)
    b, d, n, L = 2, 16, 8, 300
    xz = torch.randn(b, 2 * d, L, generator=g, device="cuda")
    x, z = xz.chunk(2, dim=1)
    u, delta = torch.randn(b, d, L, generator=g, device="cuda"), torch.rand(b, d, L, generator=g, device="cuda")
    A = -torch.rand(d, n, generator=g, device="cuda")
    B, C = (torch.randn(b, n, L, generator=g, device="cuda") for _ in range(2))
    D, bias = torch.randn(d, generator=g, device="cuda"), torch.randn(d, generator=g, device="cuda")
    scan = chosen.selective_scan
    out, *saved = scan.fwd(u, delta, A, B, C, D, z, bias, True, True)
    torch.library.opcheck(scan.fwd, (u, delta, A, B, C, D, z, bias, True, True))
    torch.library.opcheck(scan.bwd, (u, delta, A, B, C, D, z, bias, True, torch.randn_like(out), saved))
    conv = chosen.mamba_inner.keywords["conv"]
    w, cb = torch.randn(d, 4, generator=g, device="cuda"), torch.randn(d, generator=g, device="cuda")
    op = {"causal-conv1d": "causal_conv1d_cuda", "triton": "causal_conv1d_triton"}[conv.name]
    fwd, bwd = getattr(torch.ops.mambahome, f"{op}_fwd"), getattr(torch.ops.mambahome, f"{op}_bwd")
    torch.library.opcheck(fwd, (x, w, cb))
    torch.library.opcheck(bwd, (x, w, cb, torch.randn(b, d, L, generator=g, device="cuda")))
