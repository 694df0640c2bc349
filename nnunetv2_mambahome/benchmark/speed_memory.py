"""Peak memory of one setup's training steps, run alone in this fresh interpreter (used by `benchmark speed`).

    python -m nnunetv2_mambahome.benchmark.speed_memory TRAINER PLANS WORKLOAD_JSON   -> one JSON line

One warm-up step (it creates the optimizer state and, on CUDA, runs cuDNN's autotuning), then the peak is
reset and MEASURED_STEPS more steps are measured: enough for CUDA-graph capture and replays to be included.
CUDA: `torch.cuda.max_memory_allocated` (weights, gradients, optimizer state, activations, workspaces) and
`max_memory_reserved` (what the process holds from the GPU; a CUDA graph's private pool is reserved, not
allocated, between replays, so this is the honest figure for graphed setups). CPU: peak RSS (VmHWM) minus
the RSS once everything is imported, so it counts the same things plus allocator caches; VmHWM is reset
through /proc/self/clear_refs.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from .speed_setup import Setup, Workload, build_trainer, find_trainer_class, import_network_class, random_batch

MEASURED_STEPS = 4  # eager warm-up calls of cuda_graphs, the capture, and replays


def rss_kib(field: str) -> int:
    """VmRSS / VmHWM of this process in KiB, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Set VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(setup: Setup, workload: Workload) -> dict:
    """Peak memory in MiB of MEASURED_STEPS training steps after one warm-up step."""
    cuda = workload.device.startswith("cuda")
    workload.apply_threads()
    find_trainer_class(setup.trainer)
    import_network_class(Path(workload.dataset_dir), setup, workload.configuration)
    baseline_kib = rss_kib("VmRSS")
    with tempfile.TemporaryDirectory() as results:
        trainer = build_trainer(setup, workload, Path(results))
        batch = random_batch(trainer)
        trainer.train_step(batch)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        reset_ok = cuda or reset_peak_rss()
        for _ in range(MEASURED_STEPS):
            trainer.train_step(batch)
        if cuda:
            torch.cuda.synchronize()
            return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20,
                    "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20, "kind": "cuda_max_allocated"}
        return {"peak_mib": (rss_kib("VmHWM") - baseline_kib) / 1024, "baseline_rss_mib": baseline_kib / 1024,
                "kind": "rss_peak_minus_baseline" if reset_ok else "rss_peak_minus_baseline_hwm_not_reset"}


def main(argv: list[str]) -> int:
    trainer, plans, workload = argv
    print(json.dumps(measure(Setup(trainer, plans), Workload.from_json(workload))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
