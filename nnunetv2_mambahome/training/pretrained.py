"""`nnUNetv2_train -pretrained_weights FILE` for this plugin's trainers: clear errors, and more than nnU-Net files.

nnU-Net 2.8.1's `run_training.maybe_load_checkpoint` calls `load_pretrained_weights(network, fname)`, which
reads only nnU-Net checkpoints (`checkpoint["network_weights"]`): a plain-text file fails there with an
UnpicklingError, a bare state_dict with `KeyError: 'network_weights'`. Our trainers swap in
`load_pretrained_weights` below for that one call site. It reads
- an nnU-Net checkpoint (`checkpoint_final.pth` of a training with the same network);
- a bare state_dict of the same network (`torch.save(network.state_dict(), f)`), also under a "model" key;
- for MambaHoMEPaperNet, an official Mamba-HoME train.py checkpoint (`{"model": state_dict, ...}`) or bare
  official state_dict: the official keys are converted (`compat`);
and, as nnU-Net does, transfers every parameter except the segmentation head (keys containing `.seg_layers.`,
so the number of classes may differ); every other parameter must be in the file with the same shape. Any other
file raises PretrainedWeightsError, one line naming the file and what it holds.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from nnunetv2.run import run_training
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel

from ..compat import is_official_state_dict, load_official_weights
from ..nets.paper_net import MambaHoMEPaperNet
from ..settings import InputError

HEAD_PREFIX = "decoder.seg_layers."
_HEAD_KEY = ".seg_layers."  # nnU-Net's rule for what is not transferred
_ACCEPTED = ("-pretrained_weights accepts an nnU-Net checkpoint (fold_X/checkpoint_final.pth), a state_dict of the "
             "same network, or for nnUNetTrainerMambaHoMEPaper an official Mamba-HoME checkpoint")


class PretrainedWeightsError(InputError):
    """A -pretrained_weights file that cannot initialise the network."""


def read_weights_file(fname: str) -> Mapping[str, Any]:
    """The dict stored in `fname`, or PretrainedWeightsError if it is missing, not a torch file, or not a dict."""
    if not os.path.isfile(fname):
        raise PretrainedWeightsError(f"-pretrained_weights {fname}: no such file")
    try:
        content = torch.load(fname, map_location="cpu", weights_only=False)
    except Exception as exc:  # UnpicklingError (text), RuntimeError (damaged zip), EOFError (truncated), ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise PretrainedWeightsError(f"-pretrained_weights {fname} is not a PyTorch checkpoint "
                                     f"({type(exc).__name__}: {reason[:160]}); {_ACCEPTED}") from None
    if not isinstance(content, Mapping):
        raise PretrainedWeightsError(f"-pretrained_weights {fname} holds a {type(content).__name__}, not a "
                                     f"checkpoint dict; {_ACCEPTED}")
    return content


def _state_dict(content: Mapping[str, Any], fname: str) -> tuple[Mapping[str, torch.Tensor], str]:
    """(state_dict, what kind of file) from a checkpoint's content."""
    if "network_weights" in content:
        return content["network_weights"], "nnU-Net checkpoint"
    candidate = content.get("model", content)
    if isinstance(candidate, Mapping) and candidate and all(isinstance(v, torch.Tensor) for v in candidate.values()):
        return candidate, "state_dict"
    keys = ", ".join(map(str, list(content)[:6]))
    raise PretrainedWeightsError(f"-pretrained_weights {fname} holds a dict with keys [{keys}] but neither "
                                 f"'network_weights' nor tensors; {_ACCEPTED}")


def _load_matching(module: nn.Module, state: Mapping[str, torch.Tensor], fname: str) -> int:
    """nnU-Net's transfer rule with one-line errors: every non-head parameter present with the same shape."""
    own = module.state_dict()
    wanted = [k for k in own if _HEAD_KEY not in k]
    missing = [k for k in wanted if k not in state]
    reshaped = [k for k in wanted if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or reshaped:
        details = []
        if missing:
            details.append(f"{len(missing)} of the network's {len(wanted)} tensors missing (e.g. {missing[0]})")
        if reshaped:
            k = reshaped[0]
            details.append(f"{len(reshaped)} with another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                           f"{tuple(own[k].shape)} in the network)")
        hint = (" (it is an official Mamba-HoME checkpoint: those fit nnUNetTrainerMambaHoMEPaper only)"
                if is_official_state_dict(state) else "")
        raise PretrainedWeightsError(f"-pretrained_weights {fname} does not fit {type(module).__name__}: "
                                     f"{'; '.join(details)}{hint}; the weights must come from the same trainer and "
                                     "plans (only the segmentation head may differ)")
    module.load_state_dict({k: state[k] for k in wanted}, strict=False)
    return len(wanted)


def load_pretrained_weights(network: nn.Module, fname: str, verbose: bool = False) -> None:
    """Initialise `network` from `fname` (see the module docstring); PretrainedWeightsError if it cannot."""
    module = network.module if isinstance(network, DistributedDataParallel) else network
    module = module._orig_mod if isinstance(module, OptimizedModule) else module
    content = read_weights_file(fname)
    official = content.get("model", content)
    if isinstance(module, MambaHoMEPaperNet) and "network_weights" not in content and is_official_state_dict(official):
        try:
            load_official_weights(module, official, skip_prefixes=(HEAD_PREFIX,))
        except KeyError as exc:
            raise PretrainedWeightsError(f"-pretrained_weights {fname}: {exc.args[0]}") from None
        print(f"Loaded official Mamba-HoME weights from {fname} (all but the segmentation head {HEAD_PREFIX}*)")
        return
    state, kind = _state_dict(content, fname)
    n = _load_matching(module, state, fname)
    print(f"Loaded {n} tensors of {type(module).__name__} from {fname} ({kind}; all but the segmentation head)")
    if verbose:
        print("not transferred (segmentation head):", [k for k in module.state_dict() if _HEAD_KEY in k])


def install_pretrained_weights_support() -> None:
    """Route nnUNetv2_train's `-pretrained_weights` through `load_pretrained_weights` above (idempotent)."""
    run_training.load_pretrained_weights = load_pretrained_weights
