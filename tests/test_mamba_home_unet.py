"""MambaHoMEUNet built from nnU-Net plans: the stage rule, shapes, gradients, precision and bad input."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nnunetv2_mambahome.modules import MambaHoMEBlock
from nnunetv2_mambahome.nets import MambaHoMERule
from nnunetv2_mambahome.nets import MambaHoMEUNet, PlansNotSupportedError
from nnunetv2_mambahome.plans_writer import NETWORK_CLASS, _parse_override, convert_plans
from plans_shapes import SHAPES, as_2d, configuration, plain_arch, plans, resenc_arch


def _small(arch, width=4):
    """Same plan shape with narrow features so CPU forward passes stay fast."""
    arch = copy.deepcopy(arch)
    n = arch["arch_kwargs"]["n_stages"]
    arch["arch_kwargs"]["features_per_stage"] = [min(width * 2 ** i, 8 * width) for i in range(n)]
    return arch


def _ds_shapes(patch, strides):
    scale = np.cumprod(np.array(strides), axis=0)[:-1]
    return [tuple(int(p // s) for p, s in zip(patch, sc)) for sc in scale]


def test_paper_rule_generalises_to_any_stage_count() -> None:
    cfgs = MambaHoMERule().stage_configs(5)
    assert cfgs[0] is None  # full resolution stays convolutional, like the paper's stem
    assert [c.group_size for c in cfgs[1:]] == [2048, 1024, 512, 256]
    assert [c.num_experts for c in cfgs[1:]] == [4, 8, 12, 16]
    assert [c.num_experts_second for c in cfgs[1:]] == [8, 16, 24, 32]
    assert {(c.slots_per_expert, c.depth, c.expert_mult) for c in cfgs[1:]} == {(4, 2, 2.0)}
    seven = MambaHoMERule().stage_configs(7)  # the paper's 4 token stages; deeper ones convolutional
    assert [c.group_size for c in seven[1:5]] == [2048, 1024, 512, 256] and seven[5:] == [None, None]
    unlimited = MambaHoMERule(max_token_stages=None).stage_configs(7)
    assert [c.group_size for c in unlimited[1:]] == [2048, 1024, 512, 256, 128, 64]
    assert [c.num_experts for c in unlimited[1:]] == [4, 8, 12, 16, 20, 24]
    assert [c.group_size for c in MambaHoMERule(min_group_size=300).stage_configs(6)[1:5]] == [2048, 1024, 512, 300]
    assert len(MambaHoMERule(max_token_stages=2).stage_configs(3)) == 3
    assert MambaHoMERule.from_dict(MambaHoMERule(max_token_stages=None).to_dict()).max_token_stages is None
    with pytest.raises(ValueError, match="max_token_stages"):
        MambaHoMERule(max_token_stages=0).stage_configs(5)


def test_rule_settings_and_errors() -> None:
    rule = MambaHoMERule.from_dict({"preset": "light", "group_sizes": [64, 32, 16]})
    cfgs = rule.stage_configs(4)
    assert [c.group_size for c in cfgs[1:]] == [64, 32, 16] and cfgs[1].depth == 1 and cfgs[1].num_experts == 2
    with pytest.raises(ValueError, match="has 3 entries but the plan has 4"):
        rule.stage_configs(5)
    with pytest.raises(ValueError, match="unknown Mamba-HoME setting"):
        MambaHoMERule.from_dict({"experts": 3})
    with pytest.raises(ValueError, match="unknown Mamba-HoME preset"):
        MambaHoMERule.from_dict({"preset": "huge"})
    with pytest.raises(ValueError, match="positive"):
        MambaHoMERule.from_dict({"num_experts": [4, 0, 4]}).stage_configs(4)


def _plan(shape, kind: str):
    """(patch, strides, arch) of a SHAPES entry as `kind` plans: plain/resenc, 3D or (suffix 2d) nnU-Net's 2d."""
    _, patch, features, kernels, strides = shape
    arch = (resenc_arch if kind.startswith("resenc") else plain_arch)(features, kernels, strides)
    if kind.endswith("2d"):  # the 2d configuration: the first (slice) axis dropped
        return patch[1:], [s[1:] for s in strides], as_2d(arch)
    return patch, strides, arch


@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("kind", ["plain", "resenc", "plain2d", "resenc2d"])
def test_structure_follows_plans(shape, kind) -> None:
    features = shape[2]
    patch, strides, arch = _plan(shape, kind)
    with torch.device("meta"):
        net = MambaHoMEUNet.from_configuration(configuration(plans(patch, arch)), 1, 3, True, preset="paper")
    stages = net.encoder.stages
    assert len(stages) == len(features)
    assert net.encoder.output_channels == features and net.encoder.strides == strides
    blocks = [next((m for m in s if isinstance(m, MambaHoMEBlock)), None) for s in stages]
    expected = MambaHoMERule().stage_configs(len(features))
    assert [b is not None for b in blocks] == [c is not None for c in expected]
    assert blocks[0] is None and all(b is not None for b in blocks[1:5])
    for block, cfg in ((b, c) for b, c in zip(blocks, expected) if c is not None):
        home = block.home_layers[0].home
        assert (home.group_size, home.num_experts, home.level2.num_experts) == \
            (cfg.group_size, cfg.num_experts, cfg.num_experts_second)
        assert len(block.mamba_layers) == cfg.depth
    assert len(net.decoder.stages) == len(features) - 1
    assert net.compute_conv_feature_map_size(patch) > 0


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1]], ids=["iso4", "aniso5"])
@pytest.mark.parametrize("kind", ["plain", "resenc", "plain2d"])
def test_every_parameter_gets_a_gradient(shape, kind) -> None:
    """nnU-Net's DDP runs without find_unused_parameters: one training step must touch every trainable parameter;
    the frozen ones are exactly the conv biases an instance norm cancels (`modules.cancelled_bias`)."""
    torch.manual_seed(0)
    patch, strides, arch = _plan(shape, kind)
    net = MambaHoMEUNet.from_configuration(configuration(plans(patch, _small(arch))), 2, 3, True,
                                           preset="light", scan_backend="torch")
    assert isinstance(net.encoder.stages[1][1].gsc.proj, getattr(torch.nn, f"Conv{len(patch)}d"))
    outs = net(torch.randn(1, 2, *patch))
    assert [tuple(o.shape[2:]) for o in outs] == [tuple(patch)] + _ds_shapes(patch, strides)[1:]
    assert all(o.shape[:2] == (1, 3) for o in outs)
    sum(o.float().square().mean() for o in outs).backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    cancelled = {f"{n}.bias" for n, m in net.named_modules() if "BiasCancelled" in type(m).__name__}
    assert frozen == cancelled and any(".gsc." in n for n in frozen) and any("decoder" in n for n in frozen)
    assert not any(n.startswith("decoder.seg_layers") or "transpconv" in n for n in frozen)
    net.decoder.deep_supervision = False
    assert net(torch.randn(1, 2, *patch)).shape == (1, 3, *patch)


def test_mamba_home_overrides_from_plans_arch_kwargs() -> None:
    arch = _small(plain_arch(*SHAPES[0][2:]))
    arch["network_class_name"] = NETWORK_CLASS
    arch["arch_kwargs"]["mamba_home"] = {"depth": 1, "group_sizes": [100, 50, 25], "num_experts": [1, 2, 3]}
    net = MambaHoMEUNet.from_configuration(configuration(plans(SHAPES[0][1], arch)), 1, 2, True, preset="paper")
    homes = [s[1].home_layers[0].home for s in net.encoder.stages[1:]]
    assert [h.group_size for h in homes] == [100, 50, 25] and [h.num_experts for h in homes] == [1, 2, 3]
    assert all(len(s[1].mamba_layers) == 1 for s in net.encoder.stages[1:])
    stock = copy.deepcopy(arch)
    stock["network_class_name"] = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    with pytest.raises(PlansNotSupportedError, match=r"\['mamba_home'\].*write-plans"):
        MambaHoMEUNet.from_configuration(configuration(plans(SHAPES[0][1], stock)), 1, 2, True)


def test_precision_policy_no_nan_under_autocast() -> None:
    """200 SGD steps under bf16 autocast (CPU's autocast dtype) stay finite and learn."""
    torch.manual_seed(0)
    arch = _small(plain_arch([8, 16, 32], [[3, 3, 3]] * 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]]), width=4)
    net = MambaHoMEUNet.from_configuration(configuration(plans([16, 16, 16], arch)), 1, 2, True, preset="light")
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    x = torch.randn(2, 1, 16, 16, 16) * 3
    y = (x[:, 0] > 0).long()
    losses = []
    for _ in range(200):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)[0]
            loss = torch.nn.functional.cross_entropy(out.float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-20:]) < np.mean(losses[:20])  # it also learns


def test_force_fp32_runs_float32_under_autocast() -> None:
    arch = _small(plain_arch([8, 16], [[3, 3, 3]] * 2, [[1, 1, 1], [2, 2, 2]]))
    net = MambaHoMEUNet.from_configuration(configuration(plans([8, 8, 8], arch)), 1, 2, False, force_fp32=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(torch.randn(1, 1, 8, 8, 8)).dtype == torch.float32


def test_bad_input_is_reported_clearly() -> None:
    arch = plain_arch(*SHAPES[0][2:])
    with pytest.raises(PlansNotSupportedError, match="not divisible"):
        MambaHoMEUNet.from_configuration(configuration(plans([30, 32, 32], arch)), 1, 2, True)
    with pytest.raises(PlansNotSupportedError, match=r"patch size \[32, 32\] is 2D but their conv_op Conv3d is 3D"):
        MambaHoMEUNet.from_configuration(configuration(plans([32, 32], arch)), 1, 2, True)
    with pytest.raises(PlansNotSupportedError, match="2D or 3D only"):
        MambaHoMEUNet.from_configuration(configuration(plans([32], arch)), 1, 2, True)
    other = copy.deepcopy(arch)
    other["network_class_name"] = "dynamic_network_architectures.architectures.primus.Primus"
    with pytest.raises(PlansNotSupportedError, match="not supported"):
        MambaHoMEUNet.from_configuration(configuration(plans([32, 32, 32], other)), 1, 2, True)
    net = MambaHoMEUNet.from_configuration(configuration(plans([32, 32, 32], _small(arch))), 1, 2, False, preset="light")
    with pytest.raises(ValueError, match="1 input channel"):
        net(torch.randn(1, 2, 32, 32, 32))
    bad_home = copy.deepcopy(arch)
    bad_home["network_class_name"] = NETWORK_CLASS
    bad_home["arch_kwargs"]["mamba_home"] = {"num_experts": [4, 8]}
    with pytest.raises(ValueError, match="has 2 entries"):
        MambaHoMEUNet.from_configuration(configuration(plans([32, 32, 32], bad_home)), 1, 2, True)


def test_write_plans_gives_plans_nnunet_can_build() -> None:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    source = plans([32, 32, 32], _small(resenc_arch(*SHAPES[0][2:])))
    new = convert_plans(source, "light", {"depth": 1}, "nnUNetResEncUNetMPlans_MambaHoME_light")
    arch = new["configurations"]["3d_fullres"]["architecture"]
    assert arch["network_class_name"] == NETWORK_CLASS and new["plans_name"].endswith("light")
    assert source["configurations"]["3d_fullres"]["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 1, 2, deep_supervision=True)
    assert net.rule.depth == 1 and net.rule.experts_first == 2
    unlimited = convert_plans(source, "paper", dict([_parse_override("max_token_stages=null")]), "unlimited")
    arch = unlimited["configurations"]["3d_fullres"]["architecture"]
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 1, 2, deep_supervision=True)
    assert net.rule.max_token_stages is None
    with pytest.raises(ValueError, match="unknown Mamba-HoME setting"):
        convert_plans(source, "light", {"bogus": 1})
