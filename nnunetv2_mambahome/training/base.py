"""What every trainer of this plugin shares: torch.compile off, the CPU thread policy, log lines on the run."""
from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from .cpu_threads import apply_training_cpu_threads
from .scan_backend_log import scan_backend_lines


class MambaTrainerBase(nnUNetTrainer):
    """Base of our trainers; subclasses say what they train in `describe()`.

    torch.compile is off: mamba-ssm's kernels are not traceable by Dynamo and the chunked torch scan's Python
    loops compile slowly for no gain.
    """

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
        for line in scan_backend_lines(self.device):
            self.print_to_log_file(line)
