"""The project's modules reproduce the official code's golden tensors (outputs and gradients)."""
from __future__ import annotations

import pytest
import torch

from conftest import TOLERANCES, assert_close_to_reference, fixture_kind, load_fixture
from nnunetv2_mambahome.compat import convert_reference_state_dict, load_reference_module
from nnunetv2_mambahome.ops import ENV_VAR

MODULE_FIXTURES = ["dyt", "dyt_clamp", "gsc", "home_nopad", "home_pad", "home_l2pad", "mamba_block"]


@pytest.mark.parametrize("name,backend", [(n, "auto") for n in MODULE_FIXTURES] + [("mamba_block", "triton")])
def test_fixture_forward_and_backward(name: str, backend: str, fixture_dir, monkeypatch) -> None:
    """Every module fixture; the Mamba block also on the Triton kernels (interpreted on CPUs)."""
    if backend == "triton":
        pytest.importorskip("triton")
        if not torch.cuda.is_available():
            monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(ENV_VAR, backend)
    torch.manual_seed(0)
    fx = load_fixture(name)
    rtol, c_out, c_grad = TOLERANCES[fixture_kind(name)]
    module = load_reference_module(fx)
    assert not module.training
    x = fx["input"].clone().requires_grad_(True)
    out = module(x)
    assert_close_to_reference(out, fx["output"], rtol, c_out)
    if "output_block" in fx:  # mamba_block: the block without the residual is the stricter check
        assert_close_to_reference(out - fx["input"], fx["output_block"], rtol, c_out)
    (out * fx["grad_weight"]).sum().backward()
    assert_close_to_reference(x.grad, fx["grad_input"], rtol, c_grad)

    ref_grads = convert_reference_state_dict(fx["grad_state_dict"])
    max_ref = max(g.abs().max().item() for g in ref_grads.values())
    params = dict(module.named_parameters())
    assert set(ref_grads) == set(params), "every official parameter gradient must map onto one of ours"
    for key, ref in ref_grads.items():
        if not params[key].requires_grad:  # a conv bias the next instance norm cancels: the official gradient is 0
            assert key.endswith(".bias") and params[key].grad is None, key
            assert_close_to_reference(torch.zeros_like(ref), ref, rtol, c_grad, max_ref=max_ref)
            continue
        assert params[key].grad is not None, key
        assert_close_to_reference(params[key].grad, ref, rtol, c_grad, max_ref=max_ref)


def test_mistakes_are_detected(fixture_dir) -> None:
    """The fixture comparison is sensitive: flipping one expert gate's sign breaks the HoME output."""
    fx = load_fixture("home_nopad")
    module = load_reference_module(fx)
    with torch.no_grad():
        module.expert_gates[0].neg_()
        out = module(fx["input"])
    assert (out - fx["output"]).abs().max() > 1e-2


def test_unknown_reference_class_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unsupported reference class"):
        load_reference_module({"config": {"reference_class": "src.models.Foo"}, "state_dict": {}})


def test_incomplete_state_dict_is_an_error(fixture_dir) -> None:
    fx = load_fixture("mamba_block")
    state = dict(fx["state_dict"])
    state.pop("mamba.D")
    with pytest.raises(KeyError, match="missing"):
        load_reference_module({"config": fx["config"], "state_dict": state})
    state = dict(fx["state_dict"], **{"mamba.extra": torch.zeros(1)})
    with pytest.raises(KeyError, match="unexpected"):
        load_reference_module({"config": fx["config"], "state_dict": state})
