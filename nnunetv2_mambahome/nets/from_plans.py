"""Build a MambaHoMEUNet from an nnU-Net configuration (default, ResEnc or MambaHoMEUNet plans).

Stock plans describe a PlainConvUNet (`n_conv_per_stage`) or a ResidualEncoderUNet (`n_blocks_per_stage`);
their encoder shape is kept and Mamba-HoME blocks are added by the stage rule. Plans written by
`nnunetv2-mambahome write-plans` name MambaHoMEUNet directly. A `mamba_home` dict in the plans' arch_kwargs
overrides the trainer's preset, field by field. Plans we cannot serve fail here with a clear message,
before any training starts.
"""
from __future__ import annotations

import pydoc
from typing import Any, Mapping, Optional

import numpy as np

from .mamba_home_unet import MambaHoMEUNet

_PASS_THROUGH = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage",
                 "n_blocks_per_stage", "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs",
                 "dropout_op", "dropout_op_kwargs", "nonlin", "nonlin_kwargs")
_SUPPORTED = ("PlainConvUNet", "ResidualEncoderUNet", "MambaHoMEUNet")
# keys our own plans may add to arch_kwargs; not conv-encoder settings
_EXTENSIONS = ("mamba_home", "scan_backend", "force_fp32", "deep_supervision")


class PlansNotSupportedError(ValueError):
    """The nnU-Net plans describe something MambaHoMEUNet cannot be built from."""


def check_patch_size(patch_size, strides) -> None:
    """The patch must be divisible by the cumulative stride of every stage (nnU-Net's planners ensure it)."""
    total = np.prod(np.array([list(s) if not isinstance(s, int) else [s] * len(patch_size) for s in strides]), axis=0)
    bad = [int(p) for p, t in zip(patch_size, total) if p % t]
    if bad or len(patch_size) != len(total):
        fit = [int(np.ceil(p / t) * t) for p, t in zip(patch_size, total)]
        raise PlansNotSupportedError(f"patch size {list(patch_size)} is not divisible by the network's total stride "
                                     f"{total.tolist()}; use e.g. {fit}")


def conv_plan_kwargs(arch_class_name: str, arch_kwargs: Mapping[str, Any], req_import,
                     network: str = "Mamba-HoME") -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a plans architecture entry into (conv-encoder kwargs with imports resolved, package extensions).

    The conv kwargs are the keys `PlansEncoder`/`UNetDecoder` understand; the extensions are the keys our own
    plans may add (`mamba_home`, `scan_backend`, ...). Anything else raises PlansNotSupportedError naming `network`.
    """
    short = arch_class_name.rsplit(".", 1)[-1]
    if short not in _SUPPORTED:
        raise PlansNotSupportedError(f"plans architecture {arch_class_name!r} is not supported by the {network} "
                                     f"trainers; supported: {_SUPPORTED} (nnU-Net default or ResEnc plans)")
    kwargs = dict(arch_kwargs)
    for key in req_import:
        if kwargs.get(key) is not None and isinstance(kwargs[key], str):
            located = pydoc.locate(kwargs[key])
            if located is None:
                raise PlansNotSupportedError(f"cannot import {kwargs[key]!r} named by plans key {key!r}")
            kwargs[key] = located
    if kwargs.pop("nonlin_first", False):
        raise PlansNotSupportedError("plans with nonlin_first=True are not supported")
    block = kwargs.pop("block", None)
    if block is not None and getattr(block, "__name__", str(block)).rsplit(".", 1)[-1] != "BasicBlockD":
        raise PlansNotSupportedError(f"ResEnc plans with block={block} are not supported (BasicBlockD only)")
    for key in ("bottleneck_channels", "stem_channels"):
        if kwargs.pop(key, None) not in (None, kwargs.get("features_per_stage", [None])[0]):
            raise PlansNotSupportedError(f"plans key {key} is not supported")
    extensions = {key: kwargs.pop(key) for key in _EXTENSIONS if key in kwargs}
    unknown = sorted(set(kwargs) - set(_PASS_THROUGH))
    if unknown:
        raise PlansNotSupportedError(f"unsupported plans arch_kwargs {unknown} for {arch_class_name}")
    return kwargs, extensions


def mamba_home_unet_kwargs(arch_class_name: str, arch_kwargs: Mapping[str, Any], req_import,
                           preset: str) -> dict[str, Any]:
    """Translate a plans architecture entry into MambaHoMEUNet keyword arguments."""
    kwargs, extensions = conv_plan_kwargs(arch_class_name, arch_kwargs, req_import)
    return {**kwargs, "mamba_home": {"preset": preset, **dict(extensions.get("mamba_home") or {})}}


def check_3d_configuration(configuration_manager, strides, network: str) -> None:
    """3D patch divisible by the total stride, or PlansNotSupportedError before any training starts."""
    if len(configuration_manager.patch_size) != 3:
        raise PlansNotSupportedError(f"{network} is 3D only; this configuration has a {len(configuration_manager.patch_size)}D "
                                     "patch: train a 3d configuration (3d_fullres, 3d_lowres)")
    check_patch_size(configuration_manager.patch_size, strides)


def build_from_configuration(configuration_manager, num_input_channels: int, num_output_channels: int,
                             deep_supervision: bool, preset: str = "paper", force_fp32: bool = False,
                             scan_backend: Optional[str] = None) -> MambaHoMEUNet:
    """The network for an nnU-Net ConfigurationManager (what trainers and nnUNetv2_predict call)."""
    kwargs = mamba_home_unet_kwargs(configuration_manager.network_arch_class_name,
                                    configuration_manager.network_arch_init_kwargs,
                                    configuration_manager.network_arch_init_kwargs_req_import, preset)
    check_3d_configuration(configuration_manager, kwargs["strides"], "MambaHoMEUNet")
    network = MambaHoMEUNet(input_channels=num_input_channels, num_classes=num_output_channels,
                            deep_supervision=deep_supervision, force_fp32=force_fp32, scan_backend=scan_backend,
                            **kwargs)
    network.apply(network.initialize)
    return network
