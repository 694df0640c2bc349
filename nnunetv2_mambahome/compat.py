"""Loading weights of the official Mamba-HoME code (gmum/MambaHoME) into this project's modules.

`load_reference_module(fixture)` takes a dict with `config` (`reference_class`, `constructor_kwargs`) and an
official `state_dict`, builds the equivalent module here, renames every official key to ours (experts are
stacked into batched tensors) and loads strictly: an official key that no rule explains, or a parameter of
ours left without a value, is an error. Official train.py checkpoints load with `load_official_checkpoint(path)`.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .modules import DynamicTanh, GatedSpatialConv, HoME, ResidualMambaLayer

# Official key pattern -> our key. Applied to the end of the key, so prefixes (e.g. inside the full
# network) are kept and may be rewritten separately by the caller.
_RENAMES: list[tuple[str, str]] = [
    (r"(^|\.)mamba\.", r"\1mixer."),  # MambaBlock.mamba -> ResidualMambaLayer.mixer
    (r"(^|\.)dynamic_slots_soft_moe\.to_slot_embeds\.0\.", r"\1level2.slot_proj."),
    (r"(^|\.)dynamic_slots_soft_moe\.to_slot_embeds\.2\.", r"\1level2.slot_norm."),
    (r"(^|\.)dynamic_slots_soft_moe\.norm\.", r"\1level2.norm."),
    (r"(^|\.)to_slot_embeds\.0\.", r"\1slot_proj."),
    (r"(^|\.)to_slot_embeds\.2\.", r"\1slot_norm."),
    (r"(^|\.)group_gate_mlp\.", r"\1group_gate."),
]
# Per-expert Linear layers of the official nn.Sequential experts, stacked into GEGLUExperts tensors.
_EXPERT_KEY = re.compile(r"^(?P<prefix>.*?)(?P<bank>experts_first|dynamic_slots_soft_moe\.experts)\."
                         r"(?P<e>\d+)\.(?P<layer>[03])\.(?P<kind>weight|bias)$")
_EXPERT_BANK = {"experts_first": "experts", "dynamic_slots_soft_moe.experts": "level2.experts"}
_EXPERT_PARAM = {("0", "weight"): "w_in", ("0", "bias"): "b_in", ("3", "weight"): "w_out", ("3", "bias"): "b_out"}
# Keys of the official MambaHoME network that identify its checkpoints and give its input/output channels.
_OFFICIAL_STEM = "mamba_encoder.downsample_layers.0.0.weight"
_OFFICIAL_HEAD = "out.conv.conv.weight"


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor],
                                 extra_renames: tuple[tuple[str, str], ...] = ()) -> dict[str, torch.Tensor]:
    """Official key names and layout -> this project's (stacked experts, renamed submodules)."""
    out: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state_dict.items():
        for pattern, repl in extra_renames:
            key = re.sub(pattern, repl, key)
        match = _EXPERT_KEY.match(key)
        if match:
            name = (f"{match['prefix']}{_EXPERT_BANK[match['bank']]}."
                    f"{_EXPERT_PARAM[(match['layer'], match['kind'])]}")
            experts.setdefault(name, {})[int(match["e"])] = value
            continue
        for pattern, repl in _RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    for name, per_expert in experts.items():
        if sorted(per_expert) != list(range(len(per_expert))):
            raise KeyError(f"official experts for {name} are not numbered 0..E-1: {sorted(per_expert)}")
        out[name] = torch.stack([per_expert[e] for e in range(len(per_expert))])
    return out


def _build_home(kw: dict) -> nn.Module:
    if kw.get("dropout", 0.0) != 0.0 or not kw.get("geglu", True):
        raise ValueError("only dropout=0 and geglu=True (the Mamba-HoME setting) are supported")
    return HoME(kw["dim"], kw["group_size"], kw["num_experts_first"], kw.get("num_slots_per_expert_first", 4),
                kw.get("num_experts_second"), kw.get("expert_mult", 4))


def _build_paper_net(kw: dict) -> nn.Module:
    from .nets.paper_net import MambaHoMEPaperNet

    return MambaHoMEPaperNet.from_reference_kwargs(kw)


_BUILDERS: dict[str, Callable[[dict], nn.Module]] = {
    "DynamicTanh": lambda kw: DynamicTanh(kw["normalized_shape"]),
    "GSC": lambda kw: GatedSpatialConv(kw["in_channels"] if "in_channels" in kw else kw["in_channles"]),
    "HierarchicalDynamicSlotsSoftMoE": _build_home,
    "MambaBlock": lambda kw: ResidualMambaLayer(kw["dim"], kw.get("d_state", 16), kw.get("d_conv", 4),
                                                kw.get("expand", 2)),
    "MambaHoME": _build_paper_net,
}


def supported_reference_classes() -> list[str]:
    return sorted(_BUILDERS)


def load_official_weights(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                          skip_prefixes: tuple[str, ...] = ()) -> None:
    """Load an official state_dict into our equivalent `module`, strictly except for keys under `skip_prefixes`.

    Keys are renamed by the module's optional `reference_key_renames` and then by `convert_reference_state_dict`.
    An official key that maps onto nothing, or a parameter of ours left without a value, is a KeyError.
    """
    renames = tuple(getattr(module, "reference_key_renames", ()))
    converted = {k: v for k, v in convert_reference_state_dict(state_dict, renames).items()
                 if not k.startswith(skip_prefixes)}
    result = module.load_state_dict(converted, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(skip_prefixes)]
    if missing or result.unexpected_keys:
        raise KeyError(f"official weights do not map onto {type(module).__name__}: "
                       f"missing {missing[:10]}, unexpected {result.unexpected_keys[:10]}")


def load_reference_module(fixture: Mapping[str, Any]) -> nn.Module:
    """Build this project's equivalent of an official module and load its official weights (eval mode).

    `fixture` holds `config` = {"reference_class": "...DynamicTanh" | "...GSC" |
    "...HierarchicalDynamicSlotsSoftMoE" | "...MambaBlock" | "...MambaHoME", "constructor_kwargs": {...}} and
    `state_dict` with official key names (for MambaHoME e.g. the `"model"` entry of a train.py checkpoint).
    For `MambaBlock` the returned module includes the residual the official encoder adds outside the block
    (it computes x + Mamba(DyT(x))).
    """
    config = fixture["config"]
    name = str(config["reference_class"]).rsplit(".", 1)[-1]
    if name not in _BUILDERS:
        raise ValueError(f"unsupported reference class {config['reference_class']!r}; "
                         f"supported: {supported_reference_classes()}")
    module = _BUILDERS[name](dict(config.get("constructor_kwargs", {})))
    load_official_weights(module, fixture["state_dict"])
    return module.eval()


def is_official_state_dict(state_dict: Any) -> bool:
    """Whether `state_dict` holds the official MambaHoME network's weights (its output head's key)."""
    return isinstance(state_dict, Mapping) and _OFFICIAL_HEAD in state_dict


def official_state_dict(checkpoint: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """The official network weights in a train.py checkpoint ({"model": state_dict, ...}) or a bare state_dict."""
    state_dict = checkpoint.get("model", checkpoint)
    if not is_official_state_dict(state_dict):
        raise KeyError(f"not an official Mamba-HoME checkpoint: no {_OFFICIAL_HEAD!r} under 'model' or at the top level")
    return state_dict


def load_official_checkpoint(path: str, **constructor_kwargs: Any) -> nn.Module:
    """A `MambaHoMEPaperNet` (eval mode) with the weights of an official train.py checkpoint file.

    `in_chans`/`out_chans` are read from the weights; other official constructor arguments default to the
    paper configuration and can be given as keyword arguments (e.g. `feat_size=[...]`).
    """
    state_dict = official_state_dict(torch.load(path, map_location="cpu", weights_only=False))
    kwargs = {"in_chans": state_dict[_OFFICIAL_STEM].shape[1], "out_chans": state_dict[_OFFICIAL_HEAD].shape[0],
              **constructor_kwargs}
    return load_reference_module({"config": {"reference_class": "MambaHoME", "constructor_kwargs": kwargs},
                                  "state_dict": state_dict})
