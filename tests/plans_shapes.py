"""Real nnU-Net-shaped 3d_fullres plans (as nnU-Net 2.8 writes them) for network-building tests."""
from __future__ import annotations

import copy

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

_REQ = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def plain_arch(features, kernels, strides, n_conv=2):
    n = len(features)
    return {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": n, "features_per_stage": features, "conv_op": "torch.nn.modules.conv.Conv3d",
                            "kernel_sizes": kernels, "strides": strides, "n_conv_per_stage": [n_conv] * n,
                            "n_conv_per_stage_decoder": [n_conv] * (n - 1), "conv_bias": True,
                            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": _REQ}


def resenc_arch(features, kernels, strides):
    arch = plain_arch(features, kernels, strides)
    arch["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    kw = arch["arch_kwargs"]
    del kw["n_conv_per_stage"]
    kw["n_blocks_per_stage"] = [1, 3, 4, 6, 6, 6, 6][: len(features)]
    kw["n_conv_per_stage_decoder"] = [1] * (len(features) - 1)
    return arch


def plans(patch_size, arch, name="nnUNetPlans"):
    return {"dataset_name": "Dataset999_Test", "plans_name": name, "original_median_spacing_after_transp": [1, 1, 1],
            "original_median_shape_after_transp": list(patch_size), "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres",
                                              "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                                              "patch_size": list(patch_size), "median_image_size_in_voxels": list(patch_size),
                                              "spacing": [1, 1, 1], "normalization_schemes": ["ZScoreNormalization"],
                                              "use_mask_for_norm": [False], "architecture": copy.deepcopy(arch),
                                              "batch_dice": False}},
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {}}


def configuration(plans_dict, name="3d_fullres"):
    return PlansManager(plans_dict).get_configuration(name)


K3 = [3, 3, 3]
# (id, patch, features, kernels, strides): shapes nnU-Net planned for real datasets
SHAPES = [
    ("iso4", [32, 32, 32], [32, 64, 128, 256], [K3] * 4, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]),
    ("aniso5", [20, 48, 40], [32, 64, 128, 256, 320],
     [[1, 3, 3], [1, 3, 3], K3, K3, K3], [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [5, 3, 5]]),
    ("aniso6", [24, 96, 64], [32, 64, 128, 256, 320, 320],
     [[1, 3, 3], K3, K3, K3, K3, K3], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [3, 2, 2], [1, 3, 2]]),
    ("iso7_npot", [40, 56, 72], [32, 64, 128, 256, 320, 320, 320], [K3] * 7,
     [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 7, 3], [5, 1, 3], [1, 1, 1]]),
]


def as_2d(arch):
    """The same plan as a 2d configuration (what nnU-Net writes for `2d`): first spatial axis dropped, 2D ops."""
    arch = copy.deepcopy(arch)
    kw = arch["arch_kwargs"]
    kw["conv_op"], kw["norm_op"] = "torch.nn.modules.conv.Conv2d", "torch.nn.modules.instancenorm.InstanceNorm2d"
    kw["kernel_sizes"] = [k[1:] for k in kw["kernel_sizes"]]
    kw["strides"] = [s[1:] for s in kw["strides"]]
    return arch
