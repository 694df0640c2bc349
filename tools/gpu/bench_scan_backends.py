"""Mamba mixer forward+backward on CUDA: `cuda` (mamba-ssm kernels) vs `torch` (chunked scan) backend.

Median time over repeats and peak memory per backend, at the sequence lengths MambaHoMEUNet produces for a
128^3 patch, batch 2. Run on the device after tools/gpu/install.sh.
"""
from __future__ import annotations

import statistics
import time

import torch

from nnunetv2_mambahome.modules import MambaMixer

print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
print(f"{'d_model':>7} {'L':>7} {'backend':>7} {'ms fwd+bwd':>11} {'peak MiB':>9}")
for d_model, length in ((64, 262144), (128, 32768), (256, 4096), (320, 512)):
    torch.manual_seed(0)
    mixer = MambaMixer(d_model).cuda()
    x = torch.randn(2, length, d_model, device="cuda", requires_grad=True)
    for backend in ("cuda", "torch"):
        mixer.backend = backend
        times = []
        for i in range(6):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            mixer(x).square().mean().backward()
            torch.cuda.synchronize()
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1e3)
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        print(f"{d_model:>7} {length:>7} {backend:>7} {statistics.median(times):>11.1f} {peak:>9.0f}")
