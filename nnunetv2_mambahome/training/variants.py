"""Trainer variants in nnU-Net's naming style, made from any trainer class of this plugin (or a user's).

`epochs_variant(base, 50)` is `<base>_50epochs`, `smoke_variant(base)` a seconds-long CPU run,
`short_schedule` any fixed short schedule without mirroring, `no_amp_variant(base)` `<base>_noAMP` (the
network in float32 through `force_fp32`), `radam_variant(base)` Taming Mambas' RAdam + cosine recipe. The
new class lives in `base`'s module namespace (`__module__`), so nnU-Net's lookup by name finds it there.
"""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import nnUNetTrainerNoMirroring
from torch.optim.lr_scheduler import CosineAnnealingLR

EPOCH_COUNTS = (1, 5, 10, 50, 100, 250)  # nnU-Net's own nnUNetTrainer_<N>epochs counts


def epochs_variant(base: type, epochs: int) -> type:
    """`base` with num_epochs = `epochs`, named nnU-Net style (`<base>_<epochs>epochs`)."""
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs

    name = f"{base.__name__}_{epochs}epochs"
    return type(name, (base,), {"__init__": __init__, "__doc__": f"{base.__name__} for {epochs} epochs.",
                                "__module__": base.__module__})


def epochs_variants(*bases: type) -> dict[str, type]:
    """`<base>_<N>epochs` for every base and every N of `EPOCH_COUNTS`, by name."""
    return {f"{base.__name__}_{n}epochs": epochs_variant(base, n) for base in bases for n in EPOCH_COUNTS}


def short_schedule(base: type, suffix: str, epochs: int, iterations: int, val_iterations: int, doc: str) -> type:
    """`<base>_<suffix>`: a fixed short schedule without mirroring (train-time or test-time)."""
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        self.num_iterations_per_epoch = iterations
        self.num_val_iterations_per_epoch = val_iterations

    return type(f"{base.__name__}_{suffix}", (base, nnUNetTrainerNoMirroring),
                {"__init__": __init__, "__doc__": f"{base.__name__}: {doc}", "__module__": base.__module__})


def smoke_variant(base: type) -> type:
    """`<base>_smoke`: seconds-long CPU run for tests."""
    return short_schedule(base, "smoke", 2, 3, 1, "2 epochs x 3 iterations, 1 validation iteration, no mirroring "
                                                  "(CPU smoke tests).")


def no_amp_variant(base: type) -> type:
    """`<base>_noAMP`: the network in float32 even under autocast (`force_fp32`), no GradScaler."""
    return type(f"{base.__name__}_noAMP", (base,), {
        "force_fp32": True, "__module__": base.__module__,
        "__doc__": f"{base.__name__} with the whole network in float32 (force_fp32: no autocast inside it), no "
                   "GradScaler."})


def radam_variant(base: type) -> type:
    """`<base>_RAdam`: Taming Mambas' recipe, RAdam lr 3e-4 (nnU-Net's weight decay), cosine to 5e-6 over the run."""
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.initial_lr = 3e-4

    def configure_optimizers(self):
        optimizer = torch.optim.RAdam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, CosineAnnealingLR(optimizer, T_max=self.num_epochs, eta_min=5e-6)

    return type(f"{base.__name__}_RAdam", (base,), {
        "__init__": __init__, "configure_optimizers": configure_optimizers, "__module__": base.__module__,
        "__doc__": f"{base.__name__} with Taming Mambas' recipe: RAdam 3e-4, cosine annealing to 5e-6."})
