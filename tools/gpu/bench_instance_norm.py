"""Instance norm forward+backward per implementation at the 502 plans' stage shapes (GPU machine): PyTorch's
InstanceNorm3d (cuDNN), the same with cuDNN off (PyTorch's native kernels) and the Triton kernels
(`ops.triton_instance_norm`), fp16 input with float32 affine parameters as under nnU-Net's autocast.
Prints median ms per call (CUDA events, after warm-up) and the max relative difference to the cuDNN output and
input gradient. Usage: python3 tools/gpu/bench_instance_norm.py [--iters 50]"""
import argparse

import torch
from torch import nn

from nnunetv2_mambahome.ops.triton_instance_norm import instance_norm_triton

SHAPES = [(2, 32, 80, 96, 128), (2, 64, 40, 48, 64), (2, 128, 20, 24, 32), (2, 256, 10, 12, 16), (2, 320, 5, 6, 8)]


def timed(fn, iters):
    for _ in range(5):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=50)
    args = p.parse_args()
    torch.backends.cudnn.benchmark = True
    print("shape | cudnn ms | native ms | triton ms | triton vs cudnn: out, dx max-rel")
    for shape in SHAPES:
        norm = nn.InstanceNorm3d(shape[1], affine=True).cuda()
        with torch.no_grad():
            norm.weight.normal_(); norm.bias.normal_()
        x = (torch.randn(shape, device="cuda") * 2 + 1).half().requires_grad_(True)
        dy = torch.randn(shape, device="cuda").half()

        def native():  # PyTorch's own CUDA kernels
            with torch.backends.cudnn.flags(enabled=False):
                return norm(x)

        impls = {"cudnn": lambda: norm(x), "native": native,
                 "triton": lambda: instance_norm_triton(x, norm.weight, norm.bias, norm.eps)}

        def step(f):
            x.grad = None
            norm.zero_grad(set_to_none=True)
            y = f()
            y.backward(dy)
            return y

        results = {name: timed(lambda f=f: step(f), args.iters) for name, f in impls.items()}
        outs = {name: (step(impls[name]).detach().float(), x.grad.float()) for name in ("cudnn", "triton")}
        rel = [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(outs["triton"], outs["cudnn"])]
        print(f"{shape} | {results['cudnn']:.3f} | {results['native']:.3f} | {results['triton']:.3f} | "
              f"{rel[0]:.1e}, {rel[1]:.1e}", flush=True)


if __name__ == "__main__":
    main()
