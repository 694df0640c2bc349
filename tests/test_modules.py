"""Module-level behaviour: mamba-ssm parameter layout, the block, and the token path's precision policy."""
from __future__ import annotations

import math

import pytest
import torch

from nnunetv2_mambahome.modules import HoME, MambaHoMEBlock, MambaMixer
from nnunetv2_mambahome.precision import TOKEN_DTYPE_ENV, float32_region, token_dtype, token_region


def test_mixer_parameters_match_mamba_ssm_layout() -> None:
    d = 48
    m = MambaMixer(d)
    r = math.ceil(d / 16)
    expected = {"A_log": (96, 16), "D": (96,), "in_proj.weight": (192, 48), "conv1d.weight": (96, 1, 4),
                "conv1d.bias": (96,), "x_proj.weight": (r + 32, 96), "dt_proj.weight": (96, r),
                "dt_proj.bias": (96,), "out_proj.weight": (48, 96)}
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected
    torch.testing.assert_close(m.A_log.exp(), torch.arange(1, 17.0).repeat(96, 1))
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6  # inverse-softplus of logU[1e-3, 1e-1]
    assert m.dt_proj.weight.abs().max() <= r ** -0.5


def test_mixer_is_causal() -> None:
    torch.manual_seed(0)
    m = MambaMixer(16)
    x = torch.randn(1, 50, 16)
    y = m(x)
    x2 = x.clone()
    x2[:, 30:] += 1.0
    y2 = m(x2)
    torch.testing.assert_close(y[:, :30], y2[:, :30])
    assert (y[:, 30:] - y2[:, 30:]).abs().max() > 1e-3


@pytest.mark.parametrize("spatial", [(6, 5, 4), (8, 8)])
def test_block_shapes_and_gradients(spatial) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d if len(spatial) == 3 else torch.nn.Conv2d
    norm = torch.nn.InstanceNorm3d if len(spatial) == 3 else torch.nn.InstanceNorm2d
    block = MambaHoMEBlock(8, depth=2, group_size=16, num_experts=2, conv_op=conv, norm_op=norm)
    x = torch.randn(2, 8, *spatial, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    y.square().mean().backward()
    assert all(p.grad is not None for p in block.parameters() if p.requires_grad)
    # the paper's Linear after HoME is on by default; the code-faithful variant has none
    assert isinstance(block.home_layers[0].out_linear, torch.nn.Linear)
    code_block = MambaHoMEBlock(8, 1, 16, 2, home_out_linear=False)
    assert sum(p.numel() for p in code_block.parameters()) < sum(p.numel() for p in block.parameters())


def test_batch_items_are_independent() -> None:
    torch.manual_seed(0)
    block = MambaHoMEBlock(8, depth=1, group_size=32, num_experts=2).eval()
    x = torch.randn(3, 8, 4, 4, 4)
    full = block(x)
    single = block(x[1:2])
    torch.testing.assert_close(full[1:2], single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16])
def test_token_path_computes_in_bfloat16_under_autocast_with_float32_routing(monkeypatch, autocast_dtype) -> None:
    """Under autocast (nnU-Net's is float16) the token layers compute in bfloat16, never float16, close to
    float32; their routing in float32."""
    monkeypatch.delenv(TOKEN_DTYPE_ENV, raising=False)
    torch.manual_seed(0)
    home, mixer = HoME(16, group_size=8, num_experts=2), MambaMixer(16)
    x = torch.randn(2, 20, 16)
    routing_inputs = []
    home.slot_proj.register_forward_hook(lambda m, args, out: routing_inputs.append(args[0].dtype))
    home.level2.experts.register_forward_hook(lambda m, args, out: routing_inputs.append(args[0].dtype))
    with torch.autocast("cpu", dtype=autocast_dtype):
        y, m = home(x), mixer(x)
    assert y.dtype == torch.bfloat16 and m.dtype == torch.bfloat16
    assert routing_inputs == [torch.float32, torch.float32]
    for low, ref in ((y, home(x)), (m, mixer(x))):
        assert ref.dtype == torch.float32
        assert (low.float() - ref).norm() / ref.norm() < 3e-2  # bfloat16 has 8 bits of mantissa


def test_token_dtype_env_forces_float32(monkeypatch) -> None:
    torch.manual_seed(0)
    home = HoME(16, group_size=8, num_experts=2)
    x = torch.randn(2, 20, 16)
    monkeypatch.setenv(TOKEN_DTYPE_ENV, "float32")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = home(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, home(x))
    monkeypatch.setenv(TOKEN_DTYPE_ENV, "fp8")
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match=TOKEN_DTYPE_ENV):
        home(x)


def test_regions_nest_and_float32_region_wins() -> None:
    device = torch.device("cpu")
    assert token_dtype(device) == torch.float32  # no autocast: float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with token_region(device) as outer:
            assert outer == torch.bfloat16 and not torch.is_autocast_enabled("cpu")
            with token_region(device) as inner:
                assert inner == torch.bfloat16  # inner regions keep the outer choice
            with float32_region(device):
                assert token_dtype(device) == torch.float32
            assert token_dtype(device) == torch.bfloat16
        assert token_dtype(device) == torch.bfloat16 and torch.is_autocast_enabled("cpu")


def test_block_keeps_a_float32_residual_stream_and_returns_the_gsc_dtype(monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_DTYPE_ENV, raising=False)
    torch.manual_seed(0)
    block = MambaHoMEBlock(8, depth=1, group_size=16, num_experts=2)
    stream, mixer_inputs, gsc_out = [], [], []
    block.home_layers[0].register_forward_hook(lambda m, args, out: stream.append((args[0].dtype, out.dtype)))
    block.mamba_layers[0].mixer.register_forward_hook(lambda m, args, out: mixer_inputs.append(args[0].dtype))
    block.gsc.register_forward_hook(lambda m, args, out: gsc_out.append(out.dtype))
    x = torch.randn(2, 8, 4, 6, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    assert stream == [(torch.float32, torch.float32)] and mixer_inputs == [torch.bfloat16]
    assert y.dtype == gsc_out[0] and y.is_contiguous() and y.shape == x.shape
    y.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.parameters() if p.requires_grad)
    ref = block(x)
    assert (y.float() - ref).norm() / ref.norm() < 3e-2


def test_home_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        HoME(16, group_size=0, num_experts=2)
    with pytest.raises(ValueError, match="expert_mult"):
        HoME(1, group_size=4, num_experts=2, expert_mult=0.5)


@pytest.mark.parametrize("device,backend", [("cpu", "triton"), ("cuda", "cuda"), ("cuda", "triton")])
def test_token_block_traces_as_one_graph_under_autocast(monkeypatch, device, backend) -> None:
    """torch.compile sees a whole Mamba-HoME block (GSC, Mamba and HoME layers, precision regions, the fused
    mixer with its custom scan/conv ops) as one graph without breaks, under autocast: what compiling the
    network needs (on CPU the Triton backend, interpreted; on a GPU mamba-ssm's kernels and causal-conv1d's
    conv too). The backend is resolved first, as the trainers do before compiling: its one-time import and
    probe are not traceable."""
    pytest.importorskip("triton")
    from nnunetv2_mambahome.ops import resolve_backend
    from nnunetv2_mambahome.ops.cuda_kernels import load_cuda_kernels

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if device == "cpu" and torch.cuda.is_available():
        pytest.skip("the interpreted Triton kernels are for CPU machines (here they are compiled for the GPU)")
    if backend == "cuda" and (load_cuda_kernels() is None or load_cuda_kernels().conv_fwd is None):
        pytest.skip("needs the compiled mamba-ssm and causal-conv1d kernels")
    monkeypatch.setenv("NNUNETV2_MAMBAHOME_SCAN", backend)
    assert resolve_backend(torch.device(device)).name == backend
    torch.manual_seed(0)
    block = MambaHoMEBlock(32, 1, 64, 4).to(device)
    x = torch.randn(1, 32, 4, 4, 8, device=device)

    def step(x):
        with torch.autocast(device, dtype=torch.bfloat16 if device == "cpu" else torch.float16):
            return block(x)

    explained = torch._dynamo.explain(step)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
