"""Example: your own trainer, subclassing nnUNetTrainerMambaHoME with another schedule and loss.

Shows: AdamW with cosine annealing instead of SGD + poly, Dice + top-10 % cross-entropy instead of Dice + CE,
everything else (network, data, augmentation, deep supervision, inference) inherited. nnU-Net finds these
classes by name once this directory is on nnUNet_extTrainer next to ours (see train.sh next to this file).
The `_tiny` variant runs the same recipe on the light preset for 2 epochs x 3 iterations, to try on a CPU.
"""
import numpy as np
import torch
from nnunetv2.training.loss.compound_losses import DC_and_topk_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import nnUNetTrainerNoMirroring

from nnunetv2_mambahome.training import nnUNetTrainerMambaHoME
from nnunetv2_mambahome.training.cosine_lr import CosineAnnealingScheduler


class nnUNetTrainerMambaHoMECosineTopK(nnUNetTrainerMambaHoME):
    """Mamba-HoME (paper preset), AdamW 3e-4 + cosine annealing, Dice + top-10 % CE."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 3e-4
        self.weight_decay = 1e-4

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, CosineAnnealingScheduler(optimizer, self.initial_lr, self.num_epochs)

    def _build_loss(self):
        loss = DC_and_topk_loss({"batch_dice": self.configuration_manager.batch_dice, "smooth": 1e-5, "do_bg": False,
                                 "ddp": self.is_ddp}, {"k": 10}, ignore_label=self.label_manager.ignore_label)
        if self.enable_deep_supervision:  # nnU-Net's weights: halving per scale, lowest resolution unused
            weights = np.array([1 / 2 ** i for i in range(len(self._get_deep_supervision_scales()))])
            weights[-1] = 1e-6 if self.is_ddp else 0  # DDP needs every output in the graph
            loss = DeepSupervisionWrapper(loss, weights / weights.sum())
        return loss


class nnUNetTrainerMambaHoMECosineTopK_tiny(nnUNetTrainerMambaHoMECosineTopK, nnUNetTrainerNoMirroring):
    """The same recipe on the light preset, 2 epochs x 3 iterations, no mirroring: a one-minute CPU run."""

    mamba_home_preset = "light"

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 3
        self.num_val_iterations_per_epoch = 1
