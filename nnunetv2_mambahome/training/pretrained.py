"""`nnUNetv2_train -pretrained_weights OFFICIAL.pt`: fine-tune MambaHoMEPaperNet from an official checkpoint.

nnU-Net 2.8.1's `run_training.maybe_load_checkpoint` calls `load_pretrained_weights(network, fname)`, which
only reads nnU-Net checkpoints (`checkpoint["network_weights"]`). The paper trainer swaps in
`load_pretrained_weights` below for that one call site: for a MambaHoMEPaperNet and a file without
`network_weights` (an official train.py checkpoint `{"model": state_dict, ...}` or a bare official
state_dict) it converts the official keys (`compat`) and loads everything except the segmentation head, as
nnU-Net does with its own `seg_layers`; anything else goes to nnU-Net's function unchanged.
"""
from __future__ import annotations

import torch
from nnunetv2.run import run_training
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights as nnunet_load_pretrained_weights
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel

from ..compat import load_official_weights, official_state_dict
from ..nets.paper_net import MambaHoMEPaperNet

HEAD_PREFIX = "decoder.seg_layers."


def load_pretrained_weights(network: nn.Module, fname: str, verbose: bool = False) -> None:
    """nnU-Net's `load_pretrained_weights`, also accepting official Mamba-HoME checkpoints for the paper net."""
    module = network.module if isinstance(network, DistributedDataParallel) else network
    module = module._orig_mod if isinstance(module, OptimizedModule) else module
    if isinstance(module, MambaHoMEPaperNet):
        checkpoint = torch.load(fname, map_location="cpu", weights_only=False)
        if "network_weights" not in checkpoint:
            load_official_weights(module, official_state_dict(checkpoint), skip_prefixes=(HEAD_PREFIX,))
            print(f"Loaded official Mamba-HoME weights from {fname} (all but the segmentation head {HEAD_PREFIX}*)")
            return
    nnunet_load_pretrained_weights(network, fname, verbose=verbose)


def install_official_checkpoint_support() -> None:
    """Route nnUNetv2_train's `-pretrained_weights` through `load_pretrained_weights` above (idempotent)."""
    run_training.load_pretrained_weights = load_pretrained_weights
