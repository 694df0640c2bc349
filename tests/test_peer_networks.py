"""The peer Mamba U-Nets, built through their trainers from nnU-Net-like plans (default and ResEnc).

Checks the deep-supervision outputs, that one training step gives every parameter a gradient (nnU-Net's DDP
runs without find_unused_parameters), and that the parameter count is the stock nnU-Net network's plus the
Mamba layers' analytic count.
"""
from __future__ import annotations

import math
from copy import deepcopy

import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunetv2_mambahome.nets import PlansNotSupportedError
from nnunetv2_mambahome.modules.peer_mamba_layers import reorder, restore
from nnunetv2_mambahome.training import peer_trainers as pt
from plans_shapes import as_2d

PATCH = (8, 16, 16)
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
FEATURES = [4, 8, 16, 24]
PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def plans(resenc: bool) -> dict:
    """A 4-stage 3d_fullres plans dict in the layout nnU-Net 2.8's planners write."""
    arch_kwargs = {
        "n_stages": 4, "features_per_stage": FEATURES, "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], "strides": STRIDES,
        "n_conv_per_stage_decoder": [1, 1, 1], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
        **({"n_blocks_per_stage": [1, 2, 2, 2]} if resenc else {"n_conv_per_stage": [2, 2, 2, 2]}),
    }
    config = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": list(PATCH), "median_image_size_in_voxels": [10, 20, 20], "spacing": [3.0, 1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {"network_class_name": RESENC if resenc else PLAIN, "arch_kwargs": arch_kwargs,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False,
    }
    return {"dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp":
            [3.0, 1.0, 1.0], "original_median_shape_after_transp": [20, 40, 40], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "configurations": {"3d_fullres": config},
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {}}


# analytic parameter counts (mamba-ssm's Mamba v1 layout, LayerNorm with affine)
def mamba(d: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> int:
    di, r = expand * d, math.ceil(d / 16)
    return (2 * di * d + di * d_conv + di + di * (r + 2 * d_state) + r * di + di + di * d_state + di + di * d)


def ln(d: int) -> int:
    return 2 * d


def mamba_trans(d: int, cap: int = 256) -> int:
    return 2 * ln(d) + mamba(d, min(d, cap)) + d * d + d


def bidirectional(d: int, cap: int = 256) -> int:
    return 2 * mamba_trans(d, cap) + ln(d)


def gsc(d: int) -> int:  # two 3^3 and two 1^3 convs with bias, InstanceNorm without affine
    return 2 * (27 * d * d + d) + 2 * (d * d + d)


EXTRA = {
    "UMambaBotUNet": lambda fs: ln(fs[-1]) + mamba(fs[-1]),
    "UMambaEncUNet": lambda fs: sum(ln(d) + mamba(d) for d in fs),
    "TamingSegMambaUNet": lambda fs: sum(mamba_trans(d) for d in fs),
    "BiSegMambaUNet": lambda fs: sum(bidirectional(d) for d in fs),
    "MultiSegMambaUNet": lambda fs: sum(4 * bidirectional(d, 64) for d in fs),
    "SegMambaSkipUNet": lambda fs: sum(bidirectional(d) for d in fs),
    "SegMambaUNet": lambda fs: sum(gsc(d) + 2 * (ln(d) + 3 * mamba(d)) for d in fs[1:]),
}
TRAINERS = [pt.nnUNetTrainerUMambaBot, pt.nnUNetTrainerUMambaEnc, pt.nnUNetTrainerTamingSegMamba,
            pt.nnUNetTrainerBiSegMamba, pt.nnUNetTrainerMultiSegMamba, pt.nnUNetTrainerSegMambaSkip,
            pt.nnUNetTrainerSegMamba]


def stock_count(plans_dict: dict, residual: bool) -> int:
    """Parameters of the stock nnU-Net network for these plans, as a residual encoder if `residual`."""
    arch = deepcopy(plans_dict["configurations"]["3d_fullres"]["architecture"])
    kwargs = arch["arch_kwargs"]
    if residual and "n_conv_per_stage" in kwargs:
        kwargs["n_blocks_per_stage"] = kwargs.pop("n_conv_per_stage")
    name = RESENC if "n_blocks_per_stage" in kwargs else PLAIN
    net = get_network_from_plans(name, kwargs, arch["_kw_requires_import"], 1, 3, allow_init=False,
                                 deep_supervision=True)
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("trainer", TRAINERS, ids=lambda t: t.__name__)
def test_training_step_and_parameter_count(trainer) -> None:
    torch.manual_seed(0)
    resenc = trainer is pt.nnUNetTrainerUMambaBot  # one network through ResEnc plans, the rest through default plans
    p = plans(resenc)
    net = trainer.build_network_architecture(PlansManager(p), ConfigurationManager(p["configurations"]["3d_fullres"]),
                                             1, 3, enable_deep_supervision=True)
    outputs = net(torch.randn(1, 1, *PATCH))
    expected, size = [], list(PATCH)
    for stride in STRIDES[:-1]:
        size = [s // k for s, k in zip(size, stride)]
        expected.append((1, 3, *size))
    assert [tuple(o.shape) for o in outputs] == expected
    sum(o.float().square().mean() for o in outputs).backward()
    missing = [n for n, q in net.named_parameters()
               if q.requires_grad and (q.grad is None or not torch.isfinite(q.grad).all())]
    assert not missing, f"parameters without a (finite) gradient: {missing}"
    mamba_grads = [q.grad.abs().sum() for n, q in net.named_parameters() if ".mixer" in n or "_mixer" in n]
    assert mamba_grads and all(g > 0 for g in mamba_grads), "a Mamba mixer got an all-zero gradient"
    residual = trainer.network_class.residual_encoder
    n_params = sum(q.numel() for q in net.parameters())
    assert n_params == stock_count(p, residual) + EXTRA[trainer.network_class.__name__](FEATURES)
    net.decoder.deep_supervision = False
    with torch.no_grad():
        assert net(torch.randn(1, 1, 16, 16, 8)).shape == (1, 3, 16, 16, 8)  # other sizes: no token-count switch


def test_reorder_restore_and_segmamba_interleave() -> None:
    spatial = (3, 4, 5)
    t = torch.randn(2, 60, 7)
    for order in ((0, 1, 2), (2, 0, 1), (1, 2, 0), (0, 2, 1)):
        assert torch.equal(restore(reorder(t, spatial, order), spatial, order), t)
    # SegMamba's interleaving (chunk into nslices = spatial[0] pieces, stack, flatten) == first axis fastest
    chunks = torch.stack(t.chunk(spatial[0], dim=1), dim=2).flatten(1, 2)
    assert torch.equal(reorder(t, spatial, (1, 2, 0)), chunks)


def test_2d_plans_build_u_mamba_and_are_rejected_by_the_3d_peers() -> None:
    """U-Mamba ships 2D networks, so its peers build for nnU-Net's 2d configuration; the 3D papers' do not."""
    p = plans(True)
    cfg = p["configurations"]["3d_fullres"]
    cfg["architecture"] = as_2d(cfg["architecture"])
    cfg["patch_size"] = list(PATCH[1:])
    for trainer in (pt.nnUNetTrainerUMambaBot, pt.nnUNetTrainerUMambaEnc):
        net = trainer.build_network_architecture(PlansManager(p), ConfigurationManager(cfg), 1, 3)
        outputs = net(torch.randn(2, 1, *PATCH[1:]))
        assert [tuple(o.shape) for o in outputs] == [(2, 3, 16, 16), (2, 3, 8, 8), (2, 3, 4, 4)]
        assert {type(m).__name__ for m in net.modules()} >= {"Conv2d", "MambaLayer"}
    for trainer in TRAINERS[2:]:
        with pytest.raises(PlansNotSupportedError, match=f"{trainer.network_class.__name__} is 3D only"):
            trainer.build_network_architecture(PlansManager(p), ConfigurationManager(cfg), 1, 3)
