"""MambaHoMEPaperNet: the official `MambaHoME` network (gmum/MambaHoME) exactly, loadable from its weights.

Encoder (SegMamba-style): a 7^3 stride-2 stem conv, then 3 x [InstanceNorm3d -> Conv3d k2 s2]; each of the
4 stages is a `MambaHoMEBlock` (GSC, then `depth` x (x + Mamba(DyT(x)), x + HoME(DyT(x))) on the raster
token sequence, last axis fastest). Each stage's output is InstanceNorm'ed for the skip while the
un-normalised map continues. Decoder: MONAI UNETR residual blocks (`unetr_blocks`), a 1x1 head, no deep
supervision. The whole forward runs in float32, also under autocast (the official training is fp32).
3D only, like the official network: its stages are fixed (4 stride-2 stages), not taken from nnU-Net's plans,
so it does not build for a 2d configuration (`MambaHoMEUNet` does).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from ..modules import MambaHoMEBlock
from ..precision import float32_region
from .unetr_blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock

# The paper / official-code configuration (13 classes as in the official inference script).
PAPER_CONFIG: dict[str, Any] = dict(
    in_chans=1, out_chans=13, depths=(2, 2, 2, 2), feat_size=(48, 96, 192, 384), hidden_size=768,
    experts_list=(4, 8, 12, 16), experts_list_second=(8, 16, 24, 32), group_list=(2048, 1024, 512, 256),
    num_slots_per_expert_first=4, expert_mult=2,
)
# 4 stride-2 stages: every spatial size must be a multiple of this.
SIZE_MULTIPLE = 16

_REFERENCE_IGNORED = ("drop_path_rate", "layer_scale_init_value", "conv_block")
_REFERENCE_FIXED = {"res_block": True, "norm_name": "instance", "spatial_dims": 3, "moe_dropout": 0.0,
                    "use_geglu": True}


def nearest_fitting_sizes(size: Sequence[int], multiple: int = SIZE_MULTIPLE) -> list[list[int]]:
    """The sizes closest to `size` with every axis a multiple of `multiple`: rounded down (if > 0) and up."""
    down = [s // multiple * multiple for s in size]
    up = [math.ceil(s / multiple) * multiple for s in size]
    return [c for c in (down, up) if min(c) > 0 and c != list(size)] or [list(size)]


def _reference_key_renames() -> tuple[tuple[str, str], ...]:
    """Official key prefixes -> ours; `compat` then renames the inner Mamba/HoME keys and stacks experts."""
    return (
        (r"^mamba_encoder\.downsample_layers\.", "encoder.downsamples."),
        (r"^mamba_encoder\.gscs\.(\d+)\.", r"encoder.stages.\1.gsc."),
        (r"^mamba_encoder\.mamba_blocks\.(\d+)\.(\d+)\.", r"encoder.stages.\1.mamba_layers.\2."),
        (r"^mamba_encoder\.moe_layers\.(\d+)\.(\d+)\.mlp\.", r"encoder.stages.\1.home_layers.\2.home."),
        (r"^mamba_encoder\.norm_moe\.(\d+)\.(\d+)\.", r"encoder.stages.\1.home_layers.\2.norm."),
        *((rf"^encoder{k}\.", f"skip_blocks.{k - 1}.") for k in range(1, 6)),
        *((rf"^decoder{k}\.", f"decoder.up_blocks.{5 - k}.") for k in range(5, 1, -1)),
        (r"^decoder1\.", "decoder.final_block."),
        (r"^out\.", "decoder.seg_layers."),
    )


class PaperEncoder(nn.Module):
    """Stem/downsampling convs and the 4 Mamba-HoME stages; returns the 4 InstanceNorm'ed stage outputs."""

    def __init__(self, in_chans: int, feat_size: Sequence[int], depths: Sequence[int], group_list: Sequence[int],
                 experts_list: Sequence[int], experts_list_second: Sequence[int], slots_per_expert: int,
                 expert_mult: float, home_out_linear: bool, scan_backend: Optional[str]):
        super().__init__()
        self.downsamples = nn.ModuleList([nn.Sequential(nn.Conv3d(in_chans, feat_size[0], 7, 2, 3))])
        self.downsamples.extend(nn.Sequential(nn.InstanceNorm3d(c_in), nn.Conv3d(c_in, c_out, 2, 2))
                                for c_in, c_out in zip(feat_size[:-1], feat_size[1:]))
        self.stages = nn.ModuleList(
            MambaHoMEBlock(c, depth, k, e, slots_per_expert, e2, expert_mult, home_out_linear=home_out_linear,
                           scan_backend=scan_backend)
            for c, depth, k, e, e2 in zip(feat_size, depths, group_list, experts_list, experts_list_second))
        self.skip_norms = nn.ModuleList(nn.InstanceNorm3d(c) for c in feat_size)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for down, stage, norm in zip(self.downsamples, self.stages, self.skip_norms):
            x = stage(down(x))
            skips.append(norm(x))
        return skips


class PaperDecoder(nn.Module):
    """UNETR up-blocks from the bottleneck to full resolution, a residual block, and the 1x1 head.

    The head is called `seg_layers` as in nnU-Net, so nnU-Net's `load_pretrained_weights` skips it.
    """

    def __init__(self, feat_size: Sequence[int], hidden_size: int, out_chans: int):
        super().__init__()
        widths = [hidden_size, *reversed(feat_size)]
        self.up_blocks = nn.ModuleList(UnetrUpBlock(c_in, c_out) for c_in, c_out in zip(widths[:-1], widths[1:]))
        self.final_block = UnetrBasicBlock(feat_size[0], feat_size[0])
        self.seg_layers = UnetOutBlock(feat_size[0], out_chans)

    def forward(self, bottleneck: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """`skips` from full resolution down, one per up-block."""
        x = bottleneck
        for up, skip in zip(self.up_blocks, reversed(skips)):
            x = up(x, skip)
        return self.seg_layers(self.final_block(x))


class MambaHoMEPaperNet(nn.Module):
    """The official Mamba-HoME network; (B, in_chans, D, H, W) -> logits (B, out_chans, D, H, W).

    Constructor arguments are the official ones (see `PAPER_CONFIG`; `experts_list_second` defaults to twice
    `experts_list`). `home_out_linear=True` adds paper eq. 10's Linear(d, d) after every HoME (the released
    code and its weights have none). Spatial sizes must be multiples of 16.
    """

    reference_key_renames = _reference_key_renames()

    def __init__(self, in_chans: int = 1, out_chans: int = 13, depths: Sequence[int] = PAPER_CONFIG["depths"],
                 feat_size: Sequence[int] = PAPER_CONFIG["feat_size"], hidden_size: int = 768,
                 experts_list: Sequence[int] = PAPER_CONFIG["experts_list"],
                 experts_list_second: Optional[Sequence[int]] = PAPER_CONFIG["experts_list_second"],
                 group_list: Sequence[int] = PAPER_CONFIG["group_list"], num_slots_per_expert_first: int = 4,
                 expert_mult: float = 2, home_out_linear: bool = False, scan_backend: Optional[str] = None):
        super().__init__()
        experts_list_second = experts_list_second or [2 * e for e in experts_list]
        lists = dict(depths=depths, feat_size=feat_size, experts_list=experts_list,
                     experts_list_second=experts_list_second, group_list=group_list)
        bad = {k: list(v) for k, v in lists.items() if len(v) != 4}
        if bad:
            raise ValueError(f"MambaHoMEPaperNet has exactly 4 encoder stages; these lists do not have 4 entries: {bad}")
        self.in_chans, self.out_chans = in_chans, out_chans
        self.encoder = PaperEncoder(in_chans, feat_size, depths, group_list, experts_list, experts_list_second,
                                    num_slots_per_expert_first, expert_mult, home_out_linear, scan_backend)
        widths = [in_chans, *feat_size, hidden_size]
        self.skip_blocks = nn.ModuleList(UnetrBasicBlock(c_in, c_out) for c_in, c_out in zip(widths[:-1], widths[1:]))
        self.decoder = PaperDecoder(feat_size, hidden_size, out_chans)

    @classmethod
    def from_reference_kwargs(cls, kw: Mapping[str, Any]) -> "MambaHoMEPaperNet":
        """Build from the official `MambaHoME(...)` constructor arguments (code-exact: no eq. 10 Linear)."""
        kw = dict(kw)
        for name in _REFERENCE_IGNORED:
            kw.pop(name, None)
        for name, supported in _REFERENCE_FIXED.items():
            value = kw.pop(name, supported)
            if value != supported:
                raise ValueError(f"official MambaHoME argument {name}={value!r} is not supported (only {supported!r})")
        unknown = sorted(set(kw) - set(PAPER_CONFIG))
        if unknown:
            raise ValueError(f"unknown official MambaHoME arguments {unknown}")
        return cls(**kw, home_out_linear=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"MambaHoMEPaperNet expects (B, {self.in_chans}, D, H, W), got {tuple(x.shape)}")
        spatial = list(x.shape[2:])
        if any(s % SIZE_MULTIPLE for s in spatial):
            raise ValueError(f"MambaHoMEPaperNet needs spatial sizes divisible by {SIZE_MULTIPLE}, got {spatial}; "
                             f"nearest fitting: {' or '.join(map(str, nearest_fitting_sizes(spatial)))}")
        with float32_region(x.device):
            x = x.float()
            features = [x, *self.encoder(x)]
            encoded = [block(f) for block, f in zip(self.skip_blocks, features)]
            return self.decoder(encoded[-1], encoded[:-1])
