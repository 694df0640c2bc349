"""The paper-faithful trainer: the official Mamba-HoME network with the paper's optimisation recipe.

Network: `MambaHoMEPaperNet` (official architecture, PyTorch default init, no deep supervision), input
channels and classes from the plans, everything in float32. Recipe (paper appendix B / official train.py):
AdamW(lr 1e-4, weight decay 1e-4, eps 1e-4), cosine annealing to 0 over the epochs (stepped per epoch), no
gradient clipping, no AMP, 800 epochs. Kept from nnU-Net: Dice+CE loss, data loading, augmentation,
patch/batch size from the plans, 250 iterations per epoch, sliding-window inference. See docs/paper_trainer.md.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import nnUNetTrainerNoMirroring
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from ..nets.paper_net import SIZE_MULTIPLE, MambaHoMEPaperNet, nearest_fitting_sizes
from ..nets.plans_encoder import PlansNotSupportedError, check_dimensions
from .base import MambaTrainerBase
from .cosine_lr import CosineAnnealingScheduler
from .variants import epochs_variants


def check_paper_patch_size(patch_size: Sequence[int], configuration_name: str = "3d_fullres") -> None:
    """Fail before training if the plans' patch cannot go through the paper net (3D, multiples of 16)."""
    patch = [int(p) for p in patch_size]
    check_dimensions("MambaHoMEPaperNet", len(patch), (3,))
    if any(p % SIZE_MULTIPLE for p in patch):
        fits, name = nearest_fitting_sizes(patch), configuration_name
        raise PlansNotSupportedError(
            f"MambaHoMEPaperNet needs a patch size divisible by {SIZE_MULTIPLE} on every axis; the plans give {patch}. "
            f"Nearest fitting: {' or '.join(map(str, fits))}. Add a configuration to the plans file (nnUNetPlans.json "
            f"in nnUNet_preprocessed/DATASET) that inherits the preprocessed data and sets the patch, e.g. "
            f'"configurations": {{..., "{name}_p16": {{"inherits_from": "{name}", "patch_size": {fits[-1]}}}}}, '
            f"then train and predict with configuration {name}_p16 (see docs/paper_trainer.md)")


class nnUNetTrainerMambaHoMEPaper(MambaTrainerBase):
    """MambaHoMEPaperNet (the official network) with the paper's recipe; see the module docstring."""

    # Architecture arguments of MambaHoMEPaperNet besides in_chans/out_chans (default: the paper's).
    net_kwargs: dict[str, Any] = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-4
        self.weight_decay = 1e-4
        self.adam_eps = 1e-4
        self.num_epochs = 800
        self.enable_deep_supervision = False
        self.grad_scaler = None  # fp32 training
        check_paper_patch_size(self.configuration_manager.patch_size, configuration)

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = False) -> nn.Module:
        check_paper_patch_size(configuration_manager.patch_size)
        return MambaHoMEPaperNet(in_chans=num_input_channels, out_chans=num_output_channels, **cls.net_kwargs)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay,
                                      eps=self.adam_eps)
        return optimizer, CosineAnnealingScheduler(optimizer, self.initial_lr, self.num_epochs)

    def train_step(self, batch: dict) -> dict:
        """Plain fp32 step: no autocast, no GradScaler, no gradient clipping (as the official training)."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.network(data), target)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """The paper net has no deep-supervision heads; nnU-Net's toggling is a no-op here."""

    def describe(self) -> str:
        return (f"MambaHoMEPaperNet; AdamW lr {self.initial_lr}, wd {self.weight_decay}, eps {self.adam_eps}, cosine "
                f"over {self.num_epochs} epochs, fp32, no deep supervision, no gradient clipping")


# A tiny network for seconds-long CPU runs of the nnU-Net commands (the fixture's "net" configuration).
SMOKE_NET_KWARGS: dict[str, Any] = dict(depths=(2, 1, 1, 1), feat_size=(8, 16, 24, 32), hidden_size=48,
                                        experts_list=(2, 3, 4, 6), experts_list_second=(4, 6, 8, 12),
                                        group_list=(512, 96, 64, 16))


class nnUNetTrainerMambaHoMEPaper_smoke(nnUNetTrainerMambaHoMEPaper, nnUNetTrainerNoMirroring):
    """CPU smoke run for tests: the paper recipe on a tiny network, 2 epochs x 3 iterations, 1 val iteration,
    no mirroring."""

    net_kwargs = SMOKE_NET_KWARGS

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 3
        self.num_val_iterations_per_epoch = 1


# nnU-Net-style short schedules (the cosine spans the shortened run): nnUNetTrainerMambaHoMEPaper_5epochs, ...
_VARIANTS = epochs_variants(nnUNetTrainerMambaHoMEPaper)
globals().update(_VARIANTS)

__all__ = ["nnUNetTrainerMambaHoMEPaper", "nnUNetTrainerMambaHoMEPaper_smoke", *_VARIANTS]
