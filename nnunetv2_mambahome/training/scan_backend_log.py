"""What the training log says about the selective-scan backend: which one runs and why, loudly on a slow fallback.

A CUDA run whose compiled kernels fail to import silently falls back to the pure-PyTorch scan under `auto`
and trains many times slower; the trainer writes these lines into nnU-Net's log (and stdout) at
`initialize()`, so the cause is visible where the user looks.
"""
from __future__ import annotations

import torch

from ..ops import ENV_VAR, explain_auto_choice, requested_backend

BANNER = "#" * 72
FALLBACK_HINT = ('neither the Triton scan nor mamba-ssm\'s kernels run here (the reason is above); install the '
                 'compiled kernels built against your torch: pip install --no-build-isolation '
                 '"nnunetv2-mambahome[cuda]" (README, Install), check with `nnunetv2-mambahome doctor`; '
                 f'{ENV_VAR}=torch keeps this scan and silences this warning')


def scan_backend_lines(device: torch.device) -> list[str]:
    """One line naming the backend and the reason; on CUDA with `auto` falling back to `torch`, a warning too."""
    requested = requested_backend()
    if requested != "auto":
        return [f"selective-scan backend: {requested} (forced by {ENV_VAR}={requested})"]
    choice = explain_auto_choice(device)
    lines = [f"selective-scan backend: auto -> {choice}"]
    if device.type == "cuda" and choice.split(" ", 1)[0] == "torch":
        lines += [BANNER,
                  f"WARNING: this CUDA run falls back to the pure-PyTorch selective scan, several to tens of times "
                  f"slower per Mamba layer than the compiled kernels (docs/BENCHMARKS.md); {FALLBACK_HINT}",
                  BANNER]
    return lines
