"""MambaHoMEPaperNet: the official network's golden output, official checkpoints, sizes and parameter counts."""
from __future__ import annotations

import pytest
import torch

from conftest import TOLERANCES, assert_close_to_reference, load_fixture
from nnunetv2_mambahome.compat import load_official_checkpoint, load_reference_module
from nnunetv2_mambahome.nets.paper_net import MambaHoMEPaperNet, nearest_fitting_sizes
from nnunetv2_mambahome.ops import ENV_VAR
from nnunetv2_mambahome.param_count import paper_parameter_counts
from nnunetv2_mambahome.training.paper_trainers import SMOKE_NET_KWARGS


@pytest.fixture(scope="module")
def net_fixture(fixture_dir) -> dict:
    return load_fixture("net")


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_net_fixture_reproduced(net_fixture, backend, monkeypatch) -> None:
    """The official MambaHoME forward (32^3, padding in stages 1-3) within the README's net tolerance, also with
    the Triton scan kernels (interpreted on CPUs)."""
    if backend == "triton":
        pytest.importorskip("triton")
        if not torch.cuda.is_available():
            monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(ENV_VAR, backend)
    module = load_reference_module(net_fixture)  # strict: no official key unused, no parameter left out
    assert isinstance(module, MambaHoMEPaperNet)
    with torch.no_grad():
        out = module(net_fixture["input"])
    rtol, c_out, _ = TOLERANCES["net"]
    assert out.shape == net_fixture["output"].shape
    assert_close_to_reference(out, net_fixture["output"], rtol, c_out)


def test_official_checkpoint_file_loads(net_fixture, tmp_path) -> None:
    """A train.py checkpoint {"model": state_dict, ...} loads with in/out channels read from the weights."""
    path = tmp_path / "official.pt"
    torch.save({"model": net_fixture["state_dict"], "epoch": 7}, path)
    kwargs = {k: v for k, v in net_fixture["config"]["constructor_kwargs"].items()
              if k not in ("in_chans", "out_chans", "drop_path_rate", "layer_scale_init_value")}
    from_file = load_official_checkpoint(str(path), **kwargs)
    reference = load_reference_module(net_fixture)
    assert (from_file.in_chans, from_file.out_chans) == (1, 3)
    expected = reference.state_dict()
    assert from_file.state_dict().keys() == expected.keys()
    for key, value in from_file.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


def test_paper_parameter_counts() -> None:
    """Spec section 5: 170,128,101 (code, 13 classes) and 170,521,221 with eq. 10's Linear, per part."""
    code = paper_parameter_counts(classes=13, home_out_linear=False)
    assert code == {"stem + 3 downsamples": 791_328, "GSC x4": 10_969_920,
                    "Mamba layers (incl. their DyT)": 2_609_288, "HoME layers": 104_060_152,
                    "DyT before HoME": 2_888, "Linear after HoME (eq. 10)": 0,
                    "UNETR encoders (encoder1..5)": 32_181_312, "decoders (decoder5..1)": 19_512_576,
                    "head (1x1 conv)": 637, "total": 170_128_101}
    paper = paper_parameter_counts(classes=13, home_out_linear=True)
    assert paper["total"] == 170_521_221
    assert paper["Linear after HoME (eq. 10)"] == 393_120
    assert paper_parameter_counts(classes=16)["total"] == 170_128_248


def test_sizes_not_divisible_by_16_are_a_clear_error() -> None:
    net = MambaHoMEPaperNet(**SMOKE_NET_KWARGS)
    with pytest.raises(ValueError, match=r"divisible by 16.*\[32, 32, 32\] or \[32, 32, 48\]"):
        net(torch.zeros(1, 1, 32, 32, 40))
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        net(torch.zeros(1, 2, 32, 32, 32))
    assert nearest_fitting_sizes([8, 20, 16]) == [[16, 32, 16]]  # no rounding down to 0


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    kwargs = {**SMOKE_NET_KWARGS, "depths": (1, 1, 1, 1)}
    net = MambaHoMEPaperNet(in_chans=2, out_chans=4, **kwargs, home_out_linear=True)
    out = net(torch.randn(1, 2, 16, 32, 16))
    assert out.shape == (1, 4, 16, 32, 16) and out.dtype == torch.float32
    out.square().mean().backward()
    for name, param in net.named_parameters():
        if not param.requires_grad:  # a conv bias an instance norm cancels (`modules.cancelled_bias`)
            assert name.endswith(".bias") and param.grad is None, name
            continue
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_float32_under_autocast() -> None:
    net = MambaHoMEPaperNet(**SMOKE_NET_KWARGS).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = net(torch.randn(1, 1, 16, 16, 32, dtype=torch.bfloat16))
    assert out.dtype == torch.float32


def test_unsupported_official_arguments_are_errors() -> None:
    with pytest.raises(ValueError, match="res_block"):
        MambaHoMEPaperNet.from_reference_kwargs({"res_block": False})
    with pytest.raises(ValueError, match="unknown"):
        MambaHoMEPaperNet.from_reference_kwargs({"bimamba_type": "v3"})
