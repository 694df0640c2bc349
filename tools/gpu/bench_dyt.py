"""Dynamic Tanh forward+backward at the Mamba-HoME token shapes (GPU machine): today's PyTorch path of
`modules.DynamicTanh` against its Triton path (`ops.triton_dyt`), for the two call sites of a block:
- mamba: float32 residual stream in, bfloat16 token dtype out (PyTorch: DyT(x.to(bfloat16)) in bfloat16;
  Triton: reads float32, computes float32, stores bfloat16);
- home: float32 in and out.
Prints median ms per fwd+bwd call eagerly (CUDA events, after warm-up) and replayed from a torch.cuda.CUDAGraph
capture of the fwd+bwd (GPU time without launch overhead; both timings are bench_instance_norm's), and the max
relative difference (max|a - b| / max|b|) to float64 (the same inputs, exact math) of the output and the four
gradients, PyTorch's path and Triton's.
Usage: python3 tools/gpu/bench_dyt.py [--iters 50]; `--device cpu` is a dry run of the same logic on small
shapes under Triton's interpreter (timings meaningless, no graphs; its bfloat16 stores truncate).
"""
import argparse
import os
import time

import torch

SHAPES = [(2, 122880, 64), (2, 15360, 128), (2, 1920, 256), (2, 240, 320)]
CASES = {"mamba": torch.bfloat16, "home": torch.float32}  # output dtype of the call site; x is float32


def fwd_bwd(m, x, dy, out_dtype, use_triton):
    """Output and gradients (x, alpha, weight, bias) of one call of the module on one path."""
    m.use_triton = use_triton
    y = m(x, out_dtype=out_dtype) if use_triton else m(x.to(out_dtype))  # today's call sites cast first
    return [y, *torch.autograd.grad(y, (x, m.alpha, m.weight, m.bias), dy)]


def cpu_ms(fn, iters):
    """Mean wall ms per call (the CPU dry run; CUDA timing is bench_instance_norm's `timed` and `graphed`)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1e3 / iters


def max_rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = p.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined (first Triton call)
    from bench_instance_norm import graphed, timed  # tools/gpu is on sys.path when this script runs
    from nnunetv2_mambahome.modules import DynamicTanh
    from nnunetv2_mambahome.ops.dyt_ref import dyt_ref

    shapes = SHAPES if args.device == "cuda" else [(b, max(1, L // 1024), C) for b, L, C in SHAPES]
    print("case shape | eager ms torch, triton | graph ms torch, triton | max-rel vs fp64 (torch; triton): out, dx, "
          "dalpha, dweight, dbias")
    for (case, out_dtype), shape in ((c, s) for c in CASES.items() for s in shapes):
        torch.manual_seed(0)
        m = DynamicTanh(shape[-1]).to(args.device)
        m.triton_devices = ("cuda", "cpu")  # the dry run's CPU tensors take the Triton path too (interpreted)
        with torch.no_grad():
            m.alpha.fill_(0.8); m.weight.normal_(1.0, 0.2); m.bias.normal_(0.0, 0.2)
        x = torch.randn(shape, device=args.device).requires_grad_(True)
        dy = torch.randn(shape, device=args.device).to(out_dtype)
        runs = {"torch": lambda: fwd_bwd(m, x, dy, out_dtype, use_triton=False),
                "triton": lambda: fwd_bwd(m, x, dy, out_dtype, use_triton=True)}
        on_gpu = args.device == "cuda"
        eager = {path: (timed if on_gpu else cpu_ms)(fn, args.iters) for path, fn in runs.items()}
        graph = {path: graphed(fn, args.iters) for path, fn in runs.items()} if on_gpu else {}
        leaves = [t.detach().double().requires_grad_(True) for t in (x, m.alpha, m.weight, m.bias)]
        exact = dyt_ref(leaves[0], leaves[1].clamp(*m.alpha_range), *leaves[2:])
        exact = [exact.detach(), *torch.autograd.grad(exact, leaves, dy.double())]
        diffs = "; ".join(", ".join(f"{max_rel(a, b):.1e}" for a, b in zip(fn(), exact)) for fn in runs.values())
        graph_cols = f"{graph['torch']:.3f}, {graph['triton']:.3f}" if graph else "-, -"
        print(f"{case} {shape} | {eager['torch']:.3f}, {eager['triton']:.3f} | {graph_cols} | {diffs}", flush=True)


if __name__ == "__main__":
    main()
