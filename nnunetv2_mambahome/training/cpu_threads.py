"""CPU thread policy for training: leave cores to nnU-Net's data-augmentation workers.

`nnUNetv2_train -device cpu` gives torch every core, while nnU-Net's augmentation workers run beside it.
Convolutions tolerate that, but the token path (many small ops per scan step) waits on OpenMP barriers
whenever one of its threads is descheduled: measured 4x slower per iteration on a 2-core machine with one
core busy. We therefore use cores minus augmentation workers (at least 1), unless
NNUNETV2_MAMBAHOME_CPU_THREADS says otherwise.
"""
from __future__ import annotations

import os

import torch

ENV_VAR = "NNUNETV2_MAMBAHOME_CPU_THREADS"


def training_cpu_threads() -> int:
    """Threads for the training process on CPU."""
    if os.environ.get(ENV_VAR):
        return max(1, int(os.environ[ENV_VAR]))
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    return max(1, (os.cpu_count() or 1) - get_allowed_n_proc_DA())


def apply_training_cpu_threads(device: torch.device) -> int:
    """Set torch's intra-op threads for CPU training; returns the number in use."""
    if device.type == "cpu":
        torch.set_num_threads(training_cpu_threads())
    return torch.get_num_threads()
