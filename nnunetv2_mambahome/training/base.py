"""What every trainer of this plugin shares: the acceleration mode, the CPU thread policy, one log line on the run,
environment settings checked at start, atomic checkpoints, and the wider `-pretrained_weights` support."""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

from ..acceleration import acceleration_mode, describe_acceleration
from ..atomic_files import replaced_atomically
from ..cuda_graphs import graphed
from ..modules.dyt import DynamicTanh
from ..ops import resolve_backend
from ..settings import check_environment
from .cpu_threads import apply_training_cpu_threads
from .pretrained import install_pretrained_weights_support
from .scan_backend_log import scan_backend_lines


class MambaTrainerBase(nnUNetTrainer):
    """Base of our trainers; subclasses say what they train in `describe()`.

    On GPUs the network replays its steps as CUDA graphs by default (`acceleration`): nnU-Net's torch.compile
    is used only when NNUNETV2_MAMBAHOME_ACCEL=compile asks for it (it compiles for minutes and, measured, gains
    less than the graphs); `nnUNet_compile=f` means eager, as for stock nnU-Net.
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
        compiles = acceleration_mode(self.device) == "compile" and super()._do_i_compile()
        if compiles:  # the scan backend's one-time import and probe now: Dynamo cannot trace them
            network = self.network.module if self.is_ddp else self.network
            resolve_backend(self.device, getattr(network, "scan_backend", None))
        return compiles

    def initialize(self) -> None:
        super().initialize()
        threads = apply_training_cpu_threads(self.device)
        network = self.network.module if self.is_ddp else self.network
        network = getattr(network, "_orig_mod", network)  # torch.compile's wrapper
        replays = getattr(network, "replays_cuda_graphs", False)
        if replays:  # networks that replay CUDA graphs report captures in the training log
            graphed(network, network._forward).log = self.print_to_log_file
        accel = describe_acceleration(self.device, getattr(network, "scan_backend", None))
        if not replays and accel.startswith("CUDA graphs"):
            accel = f"eager ({type(network).__name__} does not replay CUDA graphs)"
        n_params = sum(p.numel() for p in self.network.parameters())
        norms = sorted({type(m).__name__ for m in network.modules()
                        if isinstance(m, nn.modules.instancenorm._InstanceNorm)})
        dyt = sorted({"triton" if m.use_triton else "torch" for m in network.modules() if isinstance(m, DynamicTanh)})
        layout = getattr(network, "layout", None)
        self.print_to_log_file(f"{self.describe()}; {n_params / 1e6:.2f}M parameters; acceleration: {accel}"
                               + (f"; norms {', '.join(norms)}" if norms else "")
                               + (f"; DyT {', '.join(dyt)}" if dyt else "")
                               + (f"; layout {layout}" if layout else "")
                               + (f"; {threads} CPU thread(s)" if self.device.type == "cpu" else ""))
        for line in scan_backend_lines(self.device):
            self.print_to_log_file(line)

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written atomically: interrupted at any moment, the previous file stays loadable
        (nnU-Net writes in place, so a SIGINT mid-save would leave a truncated file that `--c` cannot resume)."""
        with replaced_atomically(filename) as temporary:
            super().save_checkpoint(temporary)
