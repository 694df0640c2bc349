"""Print docs/peers.md's table: parameters and CPU training-step time of every peer network, side by side with
stock nnU-Net (`nnUNetTrainer`'s PlainConvUNet) and `nnUNetTrainerMambaHoME`'s network, on one plans shape.

Each network is built by its trainer's `build_network_architecture` from the same default (PlainConvUNet)
3d_fullres plans. One iteration = forward with deep supervision, a loss over all outputs, backward and an
SGD step (nnU-Net's: lr 1e-2, momentum 0.99, Nesterov), batch 1, float32 on CPU. The networks are timed
in turn (round robin, after one warm-up step each) so that load from other processes hits them alike; the
median over the rounds is reported.

    PYTHONPATH=. python tools/peer_table.py [--patch 8 32 32] [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunetv2_mambahome.training import nnUNetTrainerMambaHoME, peer_trainers

FEATURES = [32, 64, 128, 256, 320]
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
TRAINERS = [nnUNetTrainer, nnUNetTrainerMambaHoME, peer_trainers.nnUNetTrainerUMambaBot,
            peer_trainers.nnUNetTrainerUMambaEnc, peer_trainers.nnUNetTrainerTamingSegMamba,
            peer_trainers.nnUNetTrainerBiSegMamba, peer_trainers.nnUNetTrainerMultiSegMamba,
            peer_trainers.nnUNetTrainerSegMambaSkip, peer_trainers.nnUNetTrainerSegMamba]


def configuration(patch: list[int]) -> dict:
    """A 5-stage 3d_fullres configuration as nnU-Net's default planner writes it (PlainConvUNet, 2 convs/stage)."""
    return {"patch_size": patch, "batch_size": 1, "architecture": {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": 5, "features_per_stage": FEATURES, "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[1, 3, 3]] + [[3, 3, 3]] * 4, "strides": STRIDES,
                        "n_conv_per_stage": [2] * 5, "n_conv_per_stage_decoder": [2] * 4, "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}


def training_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> float:
    """Seconds for forward + backward + optimizer step."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = sum(o.square().mean() for o in net(x))
    loss.backward()
    optimizer.step()
    elapsed = time.perf_counter() - start
    optimizer.zero_grad(set_to_none=True)  # nine networks stay in memory: keep only their weights and momenta
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch", type=int, nargs=3, default=[8, 32, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cm = ConfigurationManager(configuration(args.patch))
    pm = PlansManager({"configurations": {"3d_fullres": configuration(args.patch)}})
    nets = {t.__name__: t.build_network_architecture(pm, cm, 1, 3, enable_deep_supervision=True) for t in TRAINERS}
    opts = {n: torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True) for n, net in nets.items()}
    x = torch.randn(1, 1, *args.patch)
    times: dict[str, list[float]] = {n: [] for n in nets}
    for n in nets:  # warm-up
        print(f"warm-up: {n} {training_step(nets[n], opts[n], x):.2f} s", file=sys.stderr, flush=True)
    for r in range(args.rounds):
        for n in nets:
            times[n].append(training_step(nets[n], opts[n], x))
            print(f"round {r + 1}: {n} {times[n][-1]:.2f} s", file=sys.stderr, flush=True)
    base = statistics.median(times["nnUNetTrainer"])
    print(f"plans: PlainConvUNet 3d_fullres, 5 stages, features {FEATURES}, strides {STRIDES}, 2 convs per stage, "
          f"patch {args.patch}; batch 1, CPU float32, {args.threads} threads, median of {args.rounds} rounds\n")
    print("| trainer | network | parameters (M) | CPU s/iteration | x nnUNetTrainer |")
    print("|---|---|---:|---:|---:|")
    for n, net in nets.items():
        med = statistics.median(times[n])
        params = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"| `{n}` | {type(net).__name__} | {params:.2f} | {med:.2f} | {med / base:.1f} |")


if __name__ == "__main__":
    main()
