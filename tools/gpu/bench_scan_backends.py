"""Mamba mixer forward+backward on CUDA per scan backend (`cuda`, `triton`, `torch`), at every stage shape.

Median time of forward+backward (CUDA events, after warm-up) and peak memory above the inputs, for the token
sequences MambaHoMEUNet produces with the Dataset502 plans (80x96x128 patch) and a 128^3 patch, batch 2, in
float32 and under the training precision policy (fp16 autocast: the mixer computes in bfloat16). The `torch`
backend is timed only up to --torch-max-length tokens (it takes seconds beyond). `--sweep` also times the
Triton tile configurations of `TILE_CONFIGS` at the largest shapes (they set `triton_selective_scan.TILES`).
Run on the device after tools/gpu/install.sh:  python3 tools/gpu/bench_scan_backends.py [--sweep]
"""
from __future__ import annotations

import argparse
import statistics

import torch

from nnunetv2_mambahome.modules import MambaMixer
from nnunetv2_mambahome.ops import triton_selective_scan

SHAPES = {"502": ((64, 122880), (128, 15360), (256, 1920), (320, 240)),
          "128^3": ((64, 262144), (128, 32768), (256, 4096), (320, 512))}
# (BLOCK_T, fwd (BLOCK_D, warps, unroll), bwd (BLOCK_D, warps, unroll)); unroll 0 = fully
TILE_CONFIGS = [(32, (32, 4, 0), (32, 4, 0)), (32, (32, 4, 1), (32, 4, 1)), (64, (32, 4, 1), (16, 4, 1)),
                (64, (32, 8, 0), (32, 8, 0)), (128, (16, 4, 1), (16, 4, 1)), (32, (64, 4, 1), (64, 8, 1)),
                (16, (64, 4, 0), (64, 4, 0))]


def time_mixer(mixer, x, autocast: bool, repeats: int = 7) -> tuple[float, float]:
    """(median ms of forward+backward, peak MiB above what was allocated before)."""
    times = []
    for i in range(repeats + 2):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
            out = mixer(x)
        out.float().square().mean().backward()
        end.record()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(start.elapsed_time(end))
    return statistics.median(times), (torch.cuda.max_memory_allocated() - base) / 2**20


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sweep", action="store_true", help="also time the Triton tile configurations")
    p.add_argument("--torch-max-length", type=int, default=40000)
    args = p.parse_args()
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
    print(f"{'plans':>6} {'d_model':>7} {'L':>7} {'precision':>9} {'backend':>7} {'ms fwd+bwd':>11} {'peak MiB':>9}")
    for plans, shapes in SHAPES.items():
        for d_model, length in shapes:
            torch.manual_seed(0)
            mixer = MambaMixer(d_model).cuda()
            x = torch.randn(2, length, d_model, device="cuda", requires_grad=True)
            for autocast in (False, True):
                for backend in ("cuda", "triton", "torch"):
                    if backend == "torch" and length > args.torch_max_length:
                        continue
                    mixer.backend = backend
                    ms, mib = time_mixer(mixer, x, autocast)
                    print(f"{plans:>6} {d_model:>7} {length:>7} {'bf16' if autocast else 'fp32':>9} {backend:>7} "
                          f"{ms:>11.2f} {mib:>9.0f}", flush=True)
    if args.sweep:
        print("\nTriton tile configurations (BLOCK_T, fwd (BLOCK_D, warps, unroll), bwd (...)), bf16 policy")
        default = dict(triton_selective_scan.TILES)
        for config in TILE_CONFIGS:
            block_t, fwd, bwd = config
            triton_selective_scan.TILES["cuda"] = (block_t, {"fwd": fwd, "bwd": bwd})
            row = []
            for d_model, length in (SHAPES["502"][0], SHAPES["128^3"][0], SHAPES["502"][2]):
                torch.manual_seed(0)
                mixer = MambaMixer(d_model, backend="triton").cuda()
                x = torch.randn(2, length, d_model, device="cuda", requires_grad=True)
                row.append(f"d{d_model} L{length} {time_mixer(mixer, x, True)[0]:.2f} ms")
            print(f"  {config}: " + ", ".join(row), flush=True)
        triton_selective_scan.TILES.update(default)


if __name__ == "__main__":
    main()
