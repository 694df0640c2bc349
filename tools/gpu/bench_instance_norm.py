"""Instance norm forward+backward per implementation at the 502 plans' stage shapes (GPU machine): PyTorch's
InstanceNorm3d (cuDNN), the same with cuDNN off (PyTorch's native kernels), the Triton kernels
(`ops.triton_instance_norm`) and the Triton kernels on the same tensors laid out channels-last (`nets.layout`),
fp16 input with float32 affine parameters as under nnU-Net's autocast.
Prints median ms per forward+backward (CUDA events, after warm-up), eager (with the CPU's launch overhead) and
replayed from a CUDA graph (GPU time only, as in the graphed training step), and the max relative difference to
the cuDNN output and input gradient. Usage: python3 tools/gpu/bench_instance_norm.py [--iters 50]"""
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


def graphed(fn, iters):
    """`timed` of a CUDA graph of `fn` (warmed up on a side stream first, as torch.cuda.graphs requires)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return timed(graph.replay, iters)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=50)
    args = p.parse_args()
    torch.backends.cudnn.benchmark = True
    print("shape | eager ms: cudnn, native, triton, triton channels-last | graphed ms: the same | "
          "triton vs cudnn: out, dx max-rel | channels-last vs cudnn: out, dx")
    for shape in SHAPES:
        norm = nn.InstanceNorm3d(shape[1], affine=True).cuda()
        with torch.no_grad():
            norm.weight.normal_(); norm.bias.normal_()
        x = (torch.randn(shape, device="cuda") * 2 + 1).half().requires_grad_(True)
        dy = torch.randn(shape, device="cuda").half()
        x_cl = x.detach().contiguous(memory_format=torch.channels_last_3d).requires_grad_(True)
        dy_cl = dy.contiguous(memory_format=torch.channels_last_3d)

        def native():  # PyTorch's own CUDA kernels
            with torch.backends.cudnn.flags(enabled=False):
                return norm(x)

        impls = {"cudnn": (lambda: norm(x), x, dy), "native": (native, x, dy),
                 "triton": (lambda: instance_norm_triton(x, norm.weight, norm.bias, norm.eps), x, dy),
                 "triton_cl": (lambda: instance_norm_triton(x_cl, norm.weight, norm.bias, norm.eps), x_cl, dy_cl)}

        def step(impl):
            f, inp, grad = impl
            inp.grad = None
            norm.zero_grad(set_to_none=True)
            y = f()
            y.backward(grad)
            return y

        eager = [timed(lambda i=i: step(i), args.iters) for i in impls.values()]
        graph = [graphed(lambda i=i: step(i), args.iters) for i in impls.values()]
        outs = {name: (step(impls[name]).detach().float(), impls[name][1].grad.float())
                for name in ("cudnn", "triton", "triton_cl")}
        rel = [((a - b).abs().max() / b.abs().max()).item() for name in ("triton", "triton_cl")
               for a, b in zip(outs[name], outs["cudnn"])]
        print(f"{shape} | {', '.join(f'{t:.3f}' for t in eager)} | {', '.join(f'{t:.3f}' for t in graph)} | "
              f"{rel[0]:.1e}, {rel[1]:.1e} | {rel[2]:.1e}, {rel[3]:.1e}", flush=True)


if __name__ == "__main__":
    main()
