"""GPU equality check: golden fixtures and cross-backend agreement on CUDA, TF32 off (run on the device).

For every module fixture (outputs, input gradients, parameter gradients) on the `torch` and the `cuda` scan
backend, prints the max abs difference and the README tolerance x 10 (the fixtures README expects GPU
differences up to ~10x the CPU ones). Then MambaMixer forward/backward, cuda vs torch backend, at the
sequence lengths MambaHoMEUNet produces; then the Mamba and HoME layers under fp16 autocast (bfloat16 token
path) vs float32 on both backends. Exit code 1 if anything exceeds its tolerance.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import FIXTURE_DIR, TOLERANCES, fixture_kind, round_up_1sig  # noqa: E402

from nnunetv2_mambahome.compat import convert_reference_state_dict, load_reference_module  # noqa: E402
from nnunetv2_mambahome.modules import MambaMixer, ResidualHoMELayer, ResidualMambaLayer  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
failures = []


def report(name: str, diff: float, tol: float) -> None:
    ok = diff <= tol
    failures.extend([] if ok else [name])
    print(f"{'ok  ' if ok else 'FAIL'} {name:58s} max|diff| {diff:.2e}  tol {tol:.1e}")


for path in sorted(FIXTURE_DIR.glob("*.pt")):
    fx = torch.load(path, weights_only=True)
    rtol, c_out, c_grad = TOLERANCES[fixture_kind(path.stem)]
    for backend in ("torch", "cuda"):
        os.environ["NNUNETV2_MAMBAHOME_SCAN"] = backend
        module = load_reference_module(fx).cuda()
        x = fx["input"].cuda().requires_grad_(True)
        out = module(x)
        (out * fx["grad_weight"].cuda()).sum().backward()
        ref_out = fx["output"]
        report(f"{path.stem}[{backend}] output", (out.detach().cpu() - ref_out).abs().max().item(),
               10 * round_up_1sig(c_out * ref_out.abs().max().item()) + rtol * ref_out.abs().max().item())
        report(f"{path.stem}[{backend}] grad_input", (x.grad.cpu() - fx["grad_input"]).abs().max().item(),
               10 * round_up_1sig(c_grad * fx["grad_input"].abs().max().item()))
        ref_grads = convert_reference_state_dict(fx["grad_state_dict"])
        max_ref = max(g.abs().max().item() for g in ref_grads.values())
        params = dict(module.named_parameters())
        worst = max((params[k].grad.cpu() - g).abs().max().item() for k, g in ref_grads.items())
        report(f"{path.stem}[{backend}] grad_state_dict", worst, 10 * round_up_1sig(c_grad * max_ref))
os.environ.pop("NNUNETV2_MAMBAHOME_SCAN")

# cross-backend at the network's sequence lengths (128^3 patch: stages 1..5 have 64^3 .. 4^3 tokens)
for d_model, length in ((64, 262144), (128, 32768), (256, 4096), (320, 512), (320, 64)):
    torch.manual_seed(0)
    mixer = MambaMixer(d_model).cuda()
    x = torch.randn(2, length, d_model, device="cuda")
    results = {}
    for backend in ("torch", "cuda"):
        mixer.backend = backend
        mixer.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = mixer(xi)
        out.square().mean().backward()
        results[backend] = (out.detach(), xi.grad, {n: p.grad.clone() for n, p in mixer.named_parameters()})
    (o_t, g_t, p_t), (o_c, g_c, p_c) = results["torch"], results["cuda"]
    rel = lambda a, b: ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
    report(f"mixer d={d_model} L={length} output (rel)", rel(o_c, o_t), 1e-4)
    report(f"mixer d={d_model} L={length} grad_input (rel)", rel(g_c, g_t), 1e-3)
    report(f"mixer d={d_model} L={length} param grads (worst rel)", max(rel(p_c[k], p_t[k]) for k in p_t), 1e-3)

# the bfloat16 token path that nnU-Net's fp16 autocast selects (see precision.py) vs float32, per token layer
# and backend, at stage-1 and bottleneck sizes. Norm-relative errors (bfloat16 keeps 8 mantissa bits); the
# parameter gradients as one concatenated vector (single gates' gradients are sums that nearly cancel).
nrel = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def run_layer(module, x, autocast: bool):
    module.zero_grad()
    xi = x.clone().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
        out = module(xi)
    out.float().square().mean().backward()
    grads = torch.cat([p.grad.flatten() for p in module.parameters()])
    return (out - xi).detach(), xi.grad, grads


for d_model, length, group, experts in ((64, 262144, 2048, 4), (320, 512, 128, 16)):
    torch.manual_seed(0)
    x = torch.randn(2, length, d_model, device="cuda")
    layers = {"Mamba layer": ResidualMambaLayer(d_model).cuda(),
              "HoME layer": ResidualHoMELayer(d_model, group, experts).cuda()}
    for backend in ("torch", "cuda"):
        os.environ["NNUNETV2_MAMBAHOME_SCAN"] = backend
        for name, layer in layers.items():
            if name == "HoME layer" and backend == "torch":
                continue  # no scan inside
            (o32, g32, p32), (o16, g16, p16) = run_layer(layer, x, False), run_layer(layer, x, True)
            tag = f"{name} d={d_model} L={length} [{backend}] autocast vs fp32"
            report(f"{tag} branch output (rel)", nrel(o16, o32), 2e-2)
            report(f"{tag} grad_input (rel)", nrel(g16, g32), 2e-2)
            report(f"{tag} param grads (rel)", nrel(p16, p32), 5e-2)
os.environ.pop("NNUNETV2_MAMBAHOME_SCAN")

print(f"{len(failures)} failed" if failures else "all within tolerance")
sys.exit(1 if failures else 0)
