"""Where a Mamba-HoME training step spends its GPU time (run on the device after tools/gpu/install.sh).

Builds nnUNetTrainerMambaHoME's network from a plans file (default: Dataset503 3d_fullres, 128^3, batch 2),
runs training steps under fp16 autocast as nnU-Net does, and prints for each preset x token dtype x scan
backend x instance norm (`modules.instance_norm`) x activation layout (`nets.layout`) x acceleration (eager /
CUDA graphs, see `nnunetv2_mambahome.acceleration`): step time, GPU-busy time and peak memory. For the first
combination also (1) forward CUDA time per block kind from CUDA events around each module (eager), (2) the top kernels of a profiled step, with --by-op (3) the ATen operators of an eager
step by input shape, and with --check-graphs the gradients of a graphed step against an eager one from the same
weights and input.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import os
import time
from collections import defaultdict

import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_mambahome.acceleration import ACCEL_ENV
from nnunetv2_mambahome.benchmark.speed_measure import gpu_busy_ms
from nnunetv2_mambahome.modules import GatedSpatialConv, ResidualHoMELayer, ResidualMambaLayer
from nnunetv2_mambahome.modules.instance_norm import NORM_CHOICES, NORM_ENV
from nnunetv2_mambahome.nets import MambaHoMEUNet
from nnunetv2_mambahome.nets.layout import LAYOUT_CHOICES, LAYOUT_ENV
from nnunetv2_mambahome.ops import ENV_VAR as SCAN_ENV, resolve_backend
from nnunetv2_mambahome.precision import TOKEN_DTYPE_ENV


def step(net, x, opt, scaler):
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16):
        loss = sum(o.float().square().mean() for o in net(x))
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def measure(net, x, opt, scaler, warmup: int = 4, repeats: int = 9) -> list[float]:
    """Milliseconds of `repeats` synchronised training steps after `warmup` ones."""
    for _ in range(warmup):
        step(net, x, opt, scaler)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(net, x, opt, scaler)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)


def block_times(net, x) -> None:
    """Forward time per block kind (CUDA events; nested kinds counted in their own row only; eager)."""
    acc, events = defaultdict(float), {}
    kinds = {GatedSpatialConv: "GSC", ResidualMambaLayer: "Mamba layer", ResidualHoMELayer: "HoME layer"}
    for i, stage in enumerate(net.encoder.stages):
        kinds_stage = {id(stage[0]): f"stage{i} conv"}
        for m in stage.modules():
            for cls, name in kinds.items():
                if type(m) is cls:
                    kinds_stage[id(m)] = f"stage{i} {name}"
        for m in stage.modules():
            if id(m) in kinds_stage:
                label = kinds_stage[id(m)]
                m.register_forward_pre_hook(lambda mod, inp, label=label: events.__setitem__(
                    (label, id(mod)), [torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)]) or events[(label, id(mod))][0].record())
                m.register_forward_hook(lambda mod, inp, out, label=label: events[(label, id(mod))][1].record())
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        net(x)
    torch.cuda.synchronize()
    for (label, _), (a, b) in events.items():
        acc[label] += a.elapsed_time(b)
    print("forward ms per block:", ", ".join(f"{k} {v:.1f}" for k, v in sorted(acc.items())))


def kernels(net, x, opt, scaler) -> None:
    """The top kernels of two profiled steps."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step(net, x, opt, scaler)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70))


def ops_by_shape(net, x, opt, scaler) -> None:
    """ATen operators of one eager step by self CUDA time, grouped by input shapes: which tensors the time is
    spent on (graph replays hide the operators, so this step runs eagerly)."""
    accel = os.environ[ACCEL_ENV]
    os.environ[ACCEL_ENV] = "eager"
    step(net, x, opt, scaler)
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities, record_shapes=True, with_stack=True) as prof:
        step(net, x, opt, scaler)
        torch.cuda.synchronize()
    os.environ[ACCEL_ENV] = accel
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cuda_time_total", row_limit=80, max_name_column_width=40, max_shapes_column_width=90))
    gpu_us = lambda e: getattr(e, "self_device_time_total", None) or e.self_cuda_time_total  # noqa: E731
    copies = sorted((e for e in prof.key_averages(group_by_input_shape=True, group_by_stack_n=6)
                     if e.key == "aten::copy_"), key=gpu_us, reverse=True)
    print("largest copies (aten::copy_) by GPU time, with the Python lines that made them:")
    for e in copies[:10]:
        print(f"  {gpu_us(e) / 1e3:.3f} ms in {e.count} call(s), shapes {e.input_shapes}")
        print("\n".join(f"      {line}" for line in e.stack))


def grads_of_step(net, x, scaler) -> list:
    net.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16):
        loss = sum(o.float().square().mean() for o in net(x))
    scaler.scale(loss).backward()
    return [p.grad.float().clone() for p in net.parameters()]


def check_graphs(net, x) -> None:
    """Gradients of a graphed step (after the 2 eager calls and the capture) vs an eager one, same weights."""
    scaler = torch.amp.GradScaler("cuda", init_scale=1.0)
    os.environ[ACCEL_ENV] = "eager"
    eager = grads_of_step(net, x, scaler)
    os.environ[ACCEL_ENV] = "graphs"
    for _ in range(4):
        graphed = grads_of_step(net, x, scaler)
    num = sum((a - b).square().sum() for a, b in zip(graphed, eager)).sqrt()
    den = sum(b.square().sum() for b in eager).sqrt()
    print(f"graphed vs eager step: gradients norm-relative difference {(num / den).item():.2e} "
          f"(cuDNN autotuning may pick different algorithms: expect <1e-2 under fp16)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--plans", default=".gpu/data/nnUNet_preprocessed/Dataset503_MambaHoMEBrain/nnUNetPlans.json")
    p.add_argument("--presets", nargs="+", default=["paper", "light"])
    p.add_argument("--token-dtypes", nargs="+", default=["auto"], choices=["auto", "bfloat16", "float32"])
    p.add_argument("--backends", nargs="+", default=["triton"], choices=["cuda", "triton", "torch"])
    p.add_argument("--norms", nargs="+", default=["auto"], choices=list(NORM_CHOICES))
    p.add_argument("--layouts", nargs="+", default=["auto"], choices=list(LAYOUT_CHOICES))
    p.add_argument("--accels", nargs="+", default=["graphs", "eager"], choices=["graphs", "eager", "compile-graphs"],
                   help="compile-graphs: torch.compile of the eager forward, replayed as CUDA graphs (experiment)")
    p.add_argument("--no-profile", action="store_true", help="only step time and peak memory")
    p.add_argument("--check-graphs", action="store_true", help="graphed vs eager gradients of one step")
    p.add_argument("--by-op", action="store_true", help="also the ATen operators of an eager step by input shape")
    args = p.parse_args()
    torch.backends.cudnn.benchmark = True  # as nnU-Net's trainer
    cm = PlansManager(args.plans).get_configuration("3d_fullres")
    x = torch.randn(cm.batch_size, 1, *cm.patch_size, device="cuda")
    combos = itertools.product(args.presets, args.token_dtypes, args.backends, args.norms, args.layouts, args.accels)
    for i, (preset, token_dtype, backend, norm, layout, accel) in enumerate(combos):
        os.environ.update({TOKEN_DTYPE_ENV: token_dtype, SCAN_ENV: backend, NORM_ENV: norm, LAYOUT_ENV: layout,
                           ACCEL_ENV: "graphs" if accel == "compile-graphs" else accel})
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(0)
        net = MambaHoMEUNet.from_configuration(cm, 1, 9, True, preset=preset).cuda()
        if accel == "compile-graphs":
            resolve_backend(x.device)  # imports and probes outside the traced code
            net.__dict__["_forward"] = torch.compile(net._forward)
            t0 = time.perf_counter()
        if i == 0 and args.check_graphs:
            check_graphs(net, x)
            os.environ[ACCEL_ENV] = accel
        opt = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True)
        scaler = torch.amp.GradScaler("cuda")
        times = measure(net, x, opt, scaler)
        if accel == "compile-graphs":
            breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
            print(f"compile + capture + warm-up: {time.perf_counter() - t0:.0f} s; {breaks} graph break(s): "
                  f"{dict(torch._dynamo.utils.counters['graph_break'])}", flush=True)
        busy = gpu_busy_ms(lambda: step(net, x, opt, scaler))
        n = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"[{preset}, token dtype {token_dtype}, scan {backend}, norm {norm}, layout {layout}, {accel}] "
              f"{n:.1f}M params, step median "
              f"{times[len(times) // 2]:.1f} ms (min {times[0]:.1f}), GPU busy {busy:.1f} ms, peak "
              f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated, "
              f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved", flush=True)
        if i == 0 and not args.no_profile:
            kernels(net, x, opt, scaler)
            block_times(net, x)  # a first no-grad call: eager whatever the mode
        if i == 0 and args.by_op:
            ops_by_shape(net, x, opt, scaler)
        del net, opt, scaler


if __name__ == "__main__":
    main()
