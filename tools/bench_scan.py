"""Selective scan on CPU: our `torch` backend's Mamba mixer against mambapy's parallel scan, forward + backward.

    PYTHONPATH=. python tools/bench_scan.py [--lengths 4096 32768] [--batch 2] [--repeats 3] [--iters 1] [--threads 1]

Both sides are one Mamba (v1) mixer with d_model=64, d_state=16, expand=2, d_conv=4: ours is
`nnunetv2_mambahome.modules.MambaMixer(64, backend="torch")` (chunked scan, O(L/T) saved states), theirs is
`mambapy.mamba.MambaBlock` with `pscan=True` (Blelloch scan over full (B, L, D, N) tensors; `pip install
mambapy==1.2.0`, the `bench` extra). Every measurement runs in a fresh subprocess, so its peak RSS belongs to
it alone: peak = VmHWM - VmRSS after the model and input exist (the high-water mark is reset through
/proc/self/clear_refs first). Subprocesses alternate between the two implementations so that load from other
processes on the machine hits both alike. Time = median of the timed iterations of all runs, as wall-clock
and as process CPU time (user + system of all threads). One torch thread by default: on a shared machine
OpenMP barriers between busy cores cost our many mid-sized ops far more than mambapy's few large ones, which
measures the neighbours, not the implementations; `--threads N` measures that case too.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

IMPLS = ("ours", "mambapy")
D_MODEL, D_STATE, EXPAND, D_CONV = 64, 16, 2, 4


def build(impl: str):
    """One Mamba mixer of the benchmark's sizes."""
    if impl == "ours":
        from nnunetv2_mambahome.modules import MambaMixer

        return MambaMixer(D_MODEL, d_state=D_STATE, d_conv=D_CONV, expand=EXPAND, backend="torch")
    from mambapy.mamba import MambaBlock, MambaConfig

    return MambaBlock(MambaConfig(d_model=D_MODEL, n_layers=1, d_state=D_STATE, expand_factor=EXPAND,
                                  d_conv=D_CONV, pscan=True))


def worker(impl: str, length: int, batch: int, iters: int, threads: int) -> dict:
    """One warm-up and `iters` timed forward+backward passes in this process; times and peak RSS growth."""
    import torch

    from nnunetv2_mambahome.benchmark.speed_memory import reset_peak_rss, rss_kib

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(impl)
    x = torch.randn(batch, length, D_MODEL, requires_grad=True)
    baseline = rss_kib("VmRSS")
    reset_ok = reset_peak_rss()
    wall, cpu = [], []
    for i in range(1 + iters):
        model.zero_grad(set_to_none=True)
        x.grad = None
        start, start_cpu = time.perf_counter(), time.process_time()
        model(x).square().mean().backward()
        if i:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    peak_mib = (rss_kib("VmHWM") - baseline) / 1024
    return {"impl": impl, "length": length, "wall_s": wall, "cpu_s": cpu, "peak_mib": peak_mib,
            "hwm_reset": reset_ok, "threads": torch.get_num_threads()}


def measure(impl: str, length: int, batch: int, iters: int, threads: int) -> dict:
    """Run `worker` in a fresh interpreter and return its result."""
    cmd = [sys.executable, __file__, "--worker", impl, "--lengths", str(length), "--batch", str(batch),
           "--iters", str(iters), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{impl} L={length} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 32768])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="fresh subprocesses per implementation and length")
    parser.add_argument("--iters", type=int, default=1, help="timed iterations per subprocess (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each measurement (default 1)")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.lengths[0], args.batch, args.iters, args.threads)))
        return 0

    from nnunetv2_mambahome.benchmark.report import markdown_table

    rows = []
    for length in args.lengths:
        runs: dict[str, list[dict]] = {impl: [] for impl in IMPLS}
        for r in range(args.repeats):
            for impl in IMPLS if r % 2 == 0 else IMPLS[::-1]:  # alternate, and alternate who goes first
                res = measure(impl, length, args.batch, args.iters, args.threads)
                runs[impl].append(res)
                print(f"L={length} {impl:8s} run {r + 1}: wall {statistics.median(res['wall_s']):.3f} s/iter, "
                      f"CPU {statistics.median(res['cpu_s']):.3f} s/iter, peak +{res['peak_mib']:.0f} MiB", flush=True)
        w = {impl: statistics.median([s for res in runs[impl] for s in res["wall_s"]]) for impl in IMPLS}
        c = {impl: statistics.median([s for res in runs[impl] for s in res["cpu_s"]]) for impl in IMPLS}
        m = {impl: statistics.median([res["peak_mib"] for res in runs[impl]]) for impl in IMPLS}
        rows += [[length, impl, f"{w[impl]:.3f}", f"{w[impl] / w['mambapy']:.2f}", f"{c[impl]:.3f}",
                  f"{c[impl] / c['mambapy']:.2f}", f"{m[impl]:.0f}", f"{m[impl] / m['mambapy']:.2f}"]
                 for impl in IMPLS]
        if not all(res["hwm_reset"] for rs in runs.values() for res in rs):
            print("note: /proc/self/clear_refs not writable; peaks include the set-up's own high-water mark")
    threads = runs["ours"][0]["threads"]
    print(f"\nB={args.batch}, d_model={D_MODEL}, d_state={D_STATE}, expand={EXPAND}, d_conv={D_CONV}, float32, "
          f"{threads} torch thread(s); forward + backward; medians of {args.repeats} runs x {args.iters} iterations\n")
    print(markdown_table(["L", "implementation", "wall s / iter", "vs mambapy", "CPU s / iter", "vs mambapy",
                          "peak RSS MiB", "vs mambapy"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
