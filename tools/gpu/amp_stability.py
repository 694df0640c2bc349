"""AMP stability of nnUNetTrainerMambaHoME's training step (run on the device after tools/gpu/install.sh).

Builds the trainer from a preprocessed dataset's plans as `benchmark speed` does (scan backend and acceleration
from the environment: NNUNETV2_MAMBAHOME_SCAN, NNUNETV2_MAMBAHOME_ACCEL) and runs `--iters` of nnU-Net's own
`train_step` (fp16 autocast, GradScaler, deep supervision, gradient clipping, SGD at the initial learning rate)
on a new random batch every iteration (no data loading). Prints the loss every `--every` iterations, counts
non-finite losses and writes the losses to `--csv`. Exit code 1 if any loss is NaN/Inf.
Random images and labels: this checks numerical stability under AMP, not learning.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from nnunetv2_mambahome.benchmark.speed_setup import Setup, Workload, build_trainer, dataset_dir, random_batch


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-d", "--dataset", default="502")
    p.add_argument("-tr", "--trainer", default="nnUNetTrainerMambaHoME")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--csv", type=Path, default=Path("amp_losses.csv"))
    args = p.parse_args()
    folder = dataset_dir(args.dataset)
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    cm = PlansManager(str(folder / "nnUNetPlans.json")).get_configuration("3d_fullres")
    workload = Workload(str(folder), "3d_fullres", "cuda", tuple(cm.patch_size), cm.batch_size)
    trainer = build_trainer(Setup(args.trainer, "nnUNetPlans"), workload, Path("/tmp/amp_stability_results"))
    losses, bad, t0 = [], 0, time.perf_counter()
    for i in range(args.iters):
        loss = float(trainer.train_step(random_batch(trainer, seed=i))["loss"])
        losses.append(loss)
        bad += not math.isfinite(loss)
        if (i + 1) % args.every == 0:
            window = losses[-args.every:]
            print(f"iteration {i + 1}: loss {loss:.4f} (mean of last {args.every}: {sum(window) / len(window):.4f}), "
                  f"non-finite so far {bad}, grad scale {trainer.grad_scaler.get_scale():.0f}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    args.csv.write_text("iteration,loss\n" + "".join(f"{i + 1},{v}\n" for i, v in enumerate(losses)))
    print(f"{args.iters} iterations, {bad} non-finite losses; losses in {args.csv}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
