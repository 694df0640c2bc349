"""Measurements of `benchmark speed`: alternating training-step timing, GPU-busy time, peak memory, inference.

Timing alternates between setups (one iteration of each, repeated) so that load from other processes hits all
of them alike; warm-up iterations (torch.compile, CUDA-graph capture, cuDNN autotuning) are timed too but
reported apart. GPU-busy time is the sum of the device's kernel and copy times over a few profiled steps: next
to the wall time it shows how launch-bound a step is. Peak memory is measured per setup in a fresh subprocess
(`speed_memory`), where nothing else lives: on CUDA the allocator's peaks, on CPU the growth of the peak RSS.
Sliding-window inference is warmed up with one untimed-for-the-median call per setup (reported apart).
"""
from __future__ import annotations

import contextlib
import io
import json
import statistics
import subprocess
import sys
import time
from typing import Callable, Mapping, Optional, Sequence

import torch

from .speed_setup import Setup, Workload


def train_step_seconds(trainer, batch: dict) -> float:
    """Wall time of one `trainer.train_step` (forward, loss, backward, optimizer step), device-synchronised."""
    _sync(trainer.device)
    start = time.perf_counter()
    trainer.train_step(batch)
    _sync(trainer.device)
    return time.perf_counter() - start


def time_round_robin(
    steps: Mapping[str, Callable[[], float]], warmup: int, iters: int, log: Callable[[str], None] = print
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(timed, warm-up) seconds per call of every step function: `warmup` rounds, then `iters`, alternating."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    warmups: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(warmup + iters):
        timed = r >= warmup
        row = {name: step() for name, step in steps.items()}
        for name, s in row.items():
            (times if timed else warmups)[name].append(s)
        what = f"iteration {r - warmup + 1}/{iters}" if timed else f"warm-up {r + 1}/{warmup}"
        log(f"  {what}: " + ", ".join(f"{name} {s * 1e3:.0f} ms" for name, s in row.items()))
    return times, warmups


def gpu_busy_ms(step: Callable[[], object], steps: int = 3) -> float:
    """Device time (kernels, copies, memsets) per call of `step`, from the torch profiler over `steps` calls."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    busy_us = sum(e.self_device_time_total for e in prof.key_averages() if e.device_type == DeviceType.CUDA)
    return busy_us / 1e3 / steps


def peak_memory_mib(setup: Setup, workload: Workload) -> dict:
    """Peak memory of a few training steps of `setup`, measured in a fresh interpreter (see `speed_memory`)."""
    cmd = [sys.executable, "-m", "nnunetv2_mambahome.benchmark.speed_memory", setup.trainer, setup.plans,
           workload.to_json()]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"memory measurement of {setup.label} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def inference_seconds(trainer, volume: torch.Tensor, repeats: int) -> list[float]:
    """Wall time of nnU-Net's sliding-window prediction of `volume` (c, z, y, x), as `nnUNetv2_predict` runs it:
    step 0.5, Gaussian weighting, mirroring over the trainer's axes, deep supervision off."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    with contextlib.redirect_stdout(io.StringIO()):
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=trainer.device.type == "cuda",
                                    device=trainer.device, verbose=False, allow_tqdm=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager, None,
                                    trainer.dataset_json, type(trainer).__name__,
                                    trainer.inference_allowed_mirroring_axes)
    trainer.set_deep_supervision_enabled(False)
    seconds = []
    try:
        for _ in range(repeats):
            _sync(trainer.device)
            start = time.perf_counter()
            with torch.no_grad():
                predictor.predict_sliding_window_return_logits(volume)
            _sync(trainer.device)
            seconds.append(time.perf_counter() - start)
    finally:
        trainer.set_deep_supervision_enabled(True)
        trainer.network.train()
    return seconds


def inference_volume(trainer, case: Optional[str], shape: Optional[Sequence[int]], seed: int = 0) -> torch.Tensor:
    """A preprocessed case of the dataset, else a random volume of `shape` (default: the plans' median shape)."""
    if case is not None:
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        folder = trainer.preprocessed_dataset_folder
        data = infer_dataset_class(folder)(folder, identifiers=[case]).load_case(case)[0]
        return torch.from_numpy(data[:]).float()
    shape = shape or [int(round(s)) for s in trainer.configuration_manager.median_image_size_in_voxels]
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((trainer.num_input_channels, *shape), generator=gen)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
