"""What every trainer of this plugin shares: torch.compile off, the CPU thread policy, one log line on the run,
environment settings checked at start, atomic checkpoints, and the wider `-pretrained_weights` support."""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ..atomic_files import replaced_atomically
from ..settings import check_environment
from .cpu_threads import apply_training_cpu_threads
from .pretrained import install_pretrained_weights_support


class MambaTrainerBase(nnUNetTrainer):
    """Base of our trainers; subclasses say what they train in `describe()`.

    torch.compile is off: mamba-ssm's kernels are not traceable by Dynamo and the chunked torch scan's Python
    loops compile slowly for no gain.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # A bad NNUNETV2_MAMBAHOME_* value fails here, in one line, not in a data-loading worker later
        check_environment(device)
        super().__init__(plans, configuration, fold, dataset_json, device)
        install_pretrained_weights_support()

    def describe(self) -> str:
        """What this run trains (network, precision, recipe) for the training log."""
        return type(self.network).__name__

    def _do_i_compile(self) -> bool:
        return False

    def initialize(self) -> None:
        super().initialize()
        threads = apply_training_cpu_threads(self.device)
        n_params = sum(p.numel() for p in self.network.parameters())
        self.print_to_log_file(f"{self.describe()}; {n_params / 1e6:.2f}M parameters; torch.compile off"
                               + (f"; {threads} CPU thread(s)" if self.device.type == "cpu" else ""))

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written atomically: interrupted at any moment, the previous file stays loadable
        (nnU-Net writes in place, so a SIGINT mid-save would leave a truncated file that `--c` cannot resume)."""
        with replaced_atomically(filename) as temporary:
            super().save_checkpoint(temporary)
