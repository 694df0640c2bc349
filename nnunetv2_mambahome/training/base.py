"""What every trainer of this plugin shares: the acceleration mode, the CPU thread policy, one log line on the run."""
from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ..acceleration import acceleration_mode, describe_acceleration
from ..cuda_graphs import graphed
from .cpu_threads import apply_training_cpu_threads


class MambaTrainerBase(nnUNetTrainer):
    """Base of our trainers; subclasses say what they train in `describe()`.

    On GPUs the network replays its steps as CUDA graphs by default (`acceleration`): nnU-Net's torch.compile
    is used only when NNUNETV2_MAMBAHOME_ACCEL=compile asks for it (it compiles for minutes and, measured, gains
    less than the graphs); `nnUNet_compile=f` means eager, as for stock nnU-Net.
    """

    def describe(self) -> str:
        """What this run trains (network, precision, recipe) for the training log."""
        return type(self.network).__name__

    def _do_i_compile(self) -> bool:
        return acceleration_mode(self.device) == "compile" and super()._do_i_compile()

    def initialize(self) -> None:
        super().initialize()
        threads = apply_training_cpu_threads(self.device)
        network = self.network.module if self.is_ddp else self.network
        network = getattr(network, "_orig_mod", network)  # torch.compile's wrapper
        if hasattr(network, "_forward"):  # networks that replay CUDA graphs report captures in the training log
            graphed(network, network._forward).log = self.print_to_log_file
        n_params = sum(p.numel() for p in self.network.parameters())
        self.print_to_log_file(f"{self.describe()}; {n_params / 1e6:.2f}M parameters; acceleration: "
                               f"{describe_acceleration(self.device)}"
                               + (f"; {threads} CPU thread(s)" if self.device.type == "cpu" else ""))
