"""One authority for the network's settings: the same plans give the same network, whichever trainer builds it.

Each test started as a reproduction of a bug (issue 15): a trainer's preset silently losing to the plans while
the log named the trainer's; plans keys accepted and dropped by our builder but honoured by nnU-Net's own
`get_network_from_plans`; ResEnc initialisation skipped for MambaHoMEUNet; the peers' token layers on another
precision policy than Mamba-HoME's. Plus: state_dict layouts unchanged by the `PlansUNet` refactor.
"""
from __future__ import annotations

import copy
import hashlib

import pytest
import torch
from dynamic_network_architectures.building_blocks.residual import BasicBlockD
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import nn

from nnunetv2_mambahome.modules import MambaMixer
from nnunetv2_mambahome.nets import PEER_NETWORKS, MambaHoMEUNet, PlansNotSupportedError
from nnunetv2_mambahome.ops import ScanBackendError
from nnunetv2_mambahome.plans_writer import convert_plans
from nnunetv2_mambahome.precision import TOKEN_DTYPE_ENV
from nnunetv2_mambahome.training import (nnUNetTrainerMambaHoME, nnUNetTrainerMambaHoME_noAMP,
                                         nnUNetTrainerMambaHoMELarge, nnUNetTrainerMambaHoMELight)
from nnunetv2_mambahome.training import peer_trainers as pt
from plans_shapes import as_2d, configuration, plain_arch, plans, resenc_arch

FEATURES, KERNELS = [4, 8, 16, 24], [[1, 3, 3]] + [[3, 3, 3]] * 3
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
PATCH = [8, 16, 16]
SOURCES = {"plain": plain_arch(FEATURES, KERNELS, STRIDES), "resenc": resenc_arch(FEATURES, KERNELS, STRIDES)}
OURS = (nnUNetTrainerMambaHoME, nnUNetTrainerMambaHoME_noAMP, nnUNetTrainerMambaHoMELight, nnUNetTrainerMambaHoMELarge)
PEERS = (pt.nnUNetTrainerUMambaBot, pt.nnUNetTrainerUMambaEnc, pt.nnUNetTrainerTamingSegMamba,
         pt.nnUNetTrainerBiSegMamba, pt.nnUNetTrainerMultiSegMamba, pt.nnUNetTrainerSegMambaSkip,
         pt.nnUNetTrainerSegMamba)


def source_plans(kind: str) -> dict:
    """Stock plans with a 3d_fullres and a 2d configuration, as nnU-Net writes them."""
    p = plans(PATCH, SOURCES[kind])
    p["configurations"]["2d"] = copy.deepcopy(p["configurations"]["3d_fullres"])
    p["configurations"]["2d"].update(patch_size=PATCH[1:], architecture=as_2d(SOURCES[kind]))
    return p


def build(trainer, p: dict, name: str = "3d_fullres") -> nn.Module:
    with torch.device("meta"):
        return trainer.build_network_architecture(PlansManager(p), configuration(p, name), 1, 3, True)


def layout(net: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


# ---- 1. precedence: the plans decide, a trainer's preset fills stock plans ------------------------------------
def test_a_trainer_preset_other_than_the_plans_fails_naming_both_and_the_fix() -> None:
    paper = convert_plans(source_plans("plain"), "paper")
    with pytest.raises(PlansNotSupportedError, match=r"preset 'light' but the plans name 'paper'.*"
                                                     r"nnUNetTrainerMambaHoME.*write-plans -d DATASET --preset light"):
        build(nnUNetTrainerMambaHoMELight, paper)
    handwritten = source_plans("plain")  # plans naming MambaHoMEUNet without a preset are the paper preset
    arch = handwritten["configurations"]["3d_fullres"]["architecture"]
    arch["network_class_name"] = "nnunetv2_mambahome.nets.mamba_home_unet.MambaHoMEUNet"
    arch["arch_kwargs"]["mamba_home"] = {"depth": 1}
    with pytest.raises(PlansNotSupportedError, match="preset 'large' but the plans name 'paper'"):
        build(nnUNetTrainerMambaHoMELarge, handwritten)
    assert build(nnUNetTrainerMambaHoME, handwritten).rule.depth == 1
    light = convert_plans(source_plans("plain"), "light")
    assert build(nnUNetTrainerMambaHoMELight, light).mamba_home == {"preset": "light"}
    assert build(nnUNetTrainerMambaHoME, light).rule.experts_first == 2  # follows the plans
    stock = source_plans("resenc")
    assert build(nnUNetTrainerMambaHoMELight, stock).mamba_home == {"preset": "light"}  # the trainer fills
    assert build(nnUNetTrainerMambaHoME, stock).mamba_home == {"preset": "paper"}


@pytest.fixture
def trainer_for(tmp_path, monkeypatch):
    """A constructed (not initialised) trainer with its network built, as nnU-Net's initialize builds it."""
    monkeypatch.setenv("nnUNet_results", str(tmp_path))

    def make(trainer_class, p: dict):
        dataset_json = {"labels": {"background": 0, "a": 1, "b": 2}, "channel_names": {"0": "T1"},
                        "numTraining": 2, "file_ending": ".nii.gz"}
        trainer = trainer_class({**copy.deepcopy(p), "continue_training": False}, "3d_fullres", 0, dataset_json,
                                torch.device("cpu"))
        trainer.network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager,
                                                             1, 3, True)
        return trainer
    return make


def test_the_log_line_describes_the_built_network(trainer_for) -> None:
    light = convert_plans(source_plans("plain"), "light", {"group_sizes": [64, 32, 16]})
    light["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["scan_backend"] = "torch"
    line = trainer_for(nnUNetTrainerMambaHoME, light).describe()  # the class names no preset: the plans' shows
    assert line.startswith("MambaHoMEUNet, Mamba-HoME preset 'light' with group_sizes=[64, 32, 16]: blocks on "
                           "stages [1, 2, 3] of 4 (max_token_stages 4), depth 1/1/1, K 64/32/16, E 2/4/6, "
                           "E2 4/8/12, S 4, expert_mult 1.0, scan backend torch"), line
    assert line.endswith("everything float32")  # CPU: nnU-Net does not autocast
    paper = trainer_for(nnUNetTrainerMambaHoME_noAMP, source_plans("resenc")).describe()
    assert "preset 'paper': blocks on stages [1, 2, 3] of 4" in paper and "K 2048/1024/512" in paper
    peer = trainer_for(pt.nnUNetTrainerSegMambaSkip, source_plans("plain")).describe()
    assert peer.startswith("SegMambaSkipUNet, 4 stages, skip layers on stages [0, 1, 2, 3], scan backend env/auto")


# ---- 2. every plans key honoured as nnU-Net's get_network_from_plans honours it, or rejected ------------------
# what `write-plans` writes (source plans x preset x --set overrides), and two with keys added by hand
KEYS = {"scan_backend": "torch", "force_fp32": True}
VARIANTS = [(kind, preset, overrides, {}) for kind in SOURCES for preset in ("paper", "light", "large")
            for overrides in ({}, {"depth": 1, "max_token_stages": None, "num_experts": [3, 5, 7]})]
VARIANTS += [("plain", "paper", {}, KEYS), ("resenc", "light", {"depth": 2}, KEYS)]


@pytest.mark.parametrize("kind,preset,overrides,extra", VARIANTS,
                         ids=[f"{k}-{p}-{len(o)}{'-keys' if e else ''}" for k, p, o, e in VARIANTS])
def test_every_trainer_builds_what_nnunet_builds_from_write_plans(kind, preset, overrides, extra) -> None:
    written = convert_plans(source_plans(kind), preset, overrides)
    for cfg in written["configurations"].values():
        cfg["architecture"]["arch_kwargs"].update(extra)
    for name in ("3d_fullres", "2d"):
        stock = build(nnUNetTrainer, written, name)
        assert type(stock) is MambaHoMEUNet and stock.force_fp32 == bool(extra)
        for trainer in OURS:
            if trainer.mamba_home_preset not in (None, preset):
                with pytest.raises(PlansNotSupportedError, match=f"preset '{trainer.mamba_home_preset}'"):
                    build(trainer, written, name)
                continue
            ours = build(trainer, written, name)
            assert layout(ours) == layout(stock), trainer.__name__
            expected = stock.settings()
            if trainer.force_fp32:  # _noAMP: float32 where the plans leave it open, else as the plans say
                expected["force_fp32"] = True
            assert ours.settings() == expected, trainer.__name__


def test_plans_keys_nnunet_would_handle_otherwise_are_rejected() -> None:
    written = convert_plans(source_plans("plain"), "light")
    kwargs = written["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    for key, value, error in (("deep_supervision", True, "the trainer decides it"), ("bogus", 1, r"\['bogus'\]")):
        bad = copy.deepcopy(written)
        bad["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"][key] = value
        with pytest.raises(PlansNotSupportedError, match=error):
            build(nnUNetTrainerMambaHoME, bad)
    with pytest.raises(TypeError, match="bogus"):  # nnU-Net's builder rejects it too
        build(nnUNetTrainer, bad)
    kwargs["scan_backend"] = "fast"
    for trainer in (nnUNetTrainer, nnUNetTrainerMambaHoME):  # both builders validate the value at build time
        with pytest.raises(ScanBackendError, match="unknown scan backend 'fast'"):
            build(trainer, written)
    kwargs["scan_backend"], kwargs["force_fp32"] = None, False
    with pytest.raises(PlansNotSupportedError, match="force_fp32 True but the plans name False"):
        build(nnUNetTrainerMambaHoME_noAMP, written)
    # peers take stock plans (or plans naming their own class), not Mamba-HoME's settings
    with pytest.raises(PlansNotSupportedError, match="MambaHoMEUNet' is not supported by UMambaBotUNet"):
        build(pt.nnUNetTrainerUMambaBot, written)


# ---- 3. initialisation: stock ResEnc's for the conv parts ---------------------------------------------------
def _encoder_stage_item(key: str):
    """For a key inside our encoder stage s = Sequential(conv stage, token block): (index of the item in the
    key's parts, "0" for the conv stage or "1" for the block); None for other keys."""
    parts = key.split(".")
    if parts[:2] == ["encoder", "stages"] or parts[:3] == ["decoder", "encoder", "stages"]:
        i = parts.index("stages") + 2
        return i, parts[i]
    return None


def _stock_key(key: str) -> str:
    """Our `encoder.stages.s.0.*` (the conv stage) is stock `encoder.stages.s.*`."""
    parts, item = key.split("."), _encoder_stage_item(key)
    if item is not None:
        del parts[item[0]]
    return ".".join(parts)


def _he_scaled_std(net_params: dict) -> float:
    """Pooled std of all conv weights, each scaled by He's std: 1 under InitWeights_He(1e-2), 0.41 under torch's
    default init (std 1/sqrt(3 fan_in))."""
    scaled = [w.flatten() / (2 / ((1 + 1e-4) * w.shape[1] * w[0, 0].numel())) ** 0.5
              for w in net_params.values() if w.ndim >= 3]
    return torch.cat(scaled).std().item()


@pytest.mark.parametrize("trainer", [nnUNetTrainerMambaHoME, pt.nnUNetTrainerUMambaBot], ids=lambda t: t.__name__)
def test_resenc_initialisation_equals_stock_apart_from_the_token_blocks(trainer) -> None:
    p = source_plans("resenc")
    torch.manual_seed(0)
    stock = nnUNetTrainer.build_network_architecture(PlansManager(p), configuration(p), 1, 3, True)
    torch.manual_seed(0)
    ours = trainer.build_network_architecture(PlansManager(p), configuration(p), 1, 3, True)
    stock_params = stock.state_dict()
    blocks = {k for k in ours.state_dict() if (_encoder_stage_item(k) or (0, "0"))[1] != "0"}
    assert blocks and {_encoder_stage_item(k)[1] for k in blocks} == {"1"}
    conv_part = {_stock_key(k): v for k, v in ours.state_dict().items() if k not in blocks}
    assert {k: tuple(v.shape) for k, v in conv_part.items()} == {k: tuple(v.shape) for k, v in stock_params.items()}

    def zeroed(net: nn.Module) -> int:
        return sum(1 for m in net.modules() if isinstance(m, BasicBlockD) and not m.conv2.norm.weight.any())
    assert zeroed(ours) == zeroed(stock) == 14  # ResEnc's last norm before each residual add
    for key, value in conv_part.items():
        if value.ndim == 1:  # norms (ones, zeros, the zero-init) and conv biases (zeros): exactly stock's
            torch.testing.assert_close(value, stock_params[key], rtol=0, atol=0, msg=lambda m: f"{key}: {m}")
    assert abs(_he_scaled_std(stock_params) - 1) < 0.05 and abs(_he_scaled_std(conv_part) - 1) < 0.05


# ---- 4. one precision policy for all token layers -----------------------------------------------------------
def _mixer_dtypes(trainer, p: dict, monkeypatch, token_dtype: str = "auto") -> tuple[set, torch.dtype]:
    monkeypatch.setenv(TOKEN_DTYPE_ENV, token_dtype)
    torch.manual_seed(0)
    net = trainer.build_network_architecture(PlansManager(p), configuration(p), 1, 3, True)
    seen = set()
    for module in net.modules():
        if isinstance(module, MambaMixer):
            module.register_forward_hook(lambda m, args, out: seen.add(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(1, 1, *PATCH))[0]
    return seen, out.dtype


@pytest.mark.parametrize("trainer", [nnUNetTrainerMambaHoMELight, *PEERS], ids=lambda t: t.__name__)
def test_all_token_layers_share_the_precision_policy_and_its_float32_switch(trainer, monkeypatch) -> None:
    """Under autocast every Mamba mixer computes in the token dtype (bfloat16 where the device has it: CPU);
    `_noAMP` (force_fp32) makes everything float32; NNUNETV2_MAMBAHOME_TOKEN_DTYPE=float32 keeps the
    convolutions in autocast and the token layers float32 (the released peers' policy)."""
    p = source_plans("plain")
    assert _mixer_dtypes(trainer, p, monkeypatch) == ({torch.bfloat16}, torch.bfloat16)
    no_amp = next(t for t in (getattr(pt, f"{trainer.__name__}_noAMP", None), nnUNetTrainerMambaHoME_noAMP) if t)
    assert _mixer_dtypes(no_amp, p, monkeypatch) == ({torch.float32}, torch.float32)
    assert _mixer_dtypes(trainer, p, monkeypatch, "float32") == ({torch.float32}, torch.bfloat16)


# ---- 5. the refactor kept every state_dict layout (checkpoints and official weights load) -------------------
# (number of entries, sha256[:16] of "key shape" lines) of each network for SOURCES plans, as built by the
# code before the PlansUNet refactor (commit 49f97a6)
LAYOUTS = {
    ("plain", "nnUNetTrainerMambaHoME"): (644, "3b293ae4482d8eca"),
    ("plain", "nnUNetTrainerMambaHoMELight"): (440, "e7c84f865517c1d8"),
    ("plain", "nnUNetTrainerUMambaBot"): (390, "358c856e9557f3c7"),
    ("plain", "nnUNetTrainerUMambaEnc"): (456, "3d8cd98d01bcafb3"),
    ("plain", "nnUNetTrainerTamingSegMamba"): (488, "44a168f219babebc"),
    ("plain", "nnUNetTrainerBiSegMamba"): (624, "b2b15568eaf4d1e9"),
    ("plain", "nnUNetTrainerMultiSegMamba"): (1392, "74ffb53aa417e722"),
    ("plain", "nnUNetTrainerSegMambaSkip"): (496, "35ccbf66a6e95765"),
    ("plain", "nnUNetTrainerSegMamba"): (584, "14da67180c9c42ae"),
    ("resenc", "nnUNetTrainerMambaHoME"): (992, "144fa5660b8745a4"),
    ("resenc", "nnUNetTrainerMambaHoMELight"): (788, "75aaff1837a92c97"),
    ("resenc", "nnUNetTrainerUMambaBot"): (558, "37e862d0cc5a60fc"),
    ("resenc", "nnUNetTrainerUMambaEnc"): (624, "dec18c62b484027c"),
    ("resenc", "nnUNetTrainerTamingSegMamba"): (656, "a57b8c87d89ff3a5"),
    ("resenc", "nnUNetTrainerBiSegMamba"): (792, "8827bfcd85370ec4"),
    ("resenc", "nnUNetTrainerMultiSegMamba"): (1560, "bd545458bef781fc"),
    ("resenc", "nnUNetTrainerSegMambaSkip"): (664, "a57f6cdccc387503"),
    ("resenc", "nnUNetTrainerSegMamba"): (932, "3238dc8600c8f017"),
}


def test_state_dict_layouts_are_unchanged() -> None:
    trainers = {t.__name__: t for t in (nnUNetTrainerMambaHoME, nnUNetTrainerMambaHoMELight, *PEERS)}
    assert {t.network_class for t in PEERS} == set(PEER_NETWORKS)
    for (kind, name), expected in LAYOUTS.items():
        lines = [f"{k} {s}" for k, s in layout(build(trainers[name], plans(PATCH, SOURCES[kind])))]
        assert (len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]) == expected, (kind, name)
