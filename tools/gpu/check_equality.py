"""GPU equality check: golden fixtures and cross-backend agreement on CUDA, TF32 off (run on the device).

For every module fixture (outputs, input gradients, parameter gradients) on every scan backend (`torch`,
`cuda`, `triton`), prints the max abs difference and the README tolerance x 10 (the fixtures README expects
GPU differences up to ~10x the CPU ones; fixtures from tests/fixtures or NNUNETV2_MAMBAHOME_FIXTURES). Then
MambaMixer forward/backward of the `cuda` and `triton` backends against `torch` at the sequence lengths
MambaHoMEUNet produces (128^3 and Dataset502 plans), in float32 and under the training precision policy
(fp16 autocast -> bfloat16 mixer, against the float32 torch result); the Triton backward twice (bit-identical
gradients required); then the Mamba and HoME layers under fp16 autocast vs float32 on each backend.
Exit code 1 if anything exceeds its tolerance.
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
QUICK = "--quick" in sys.argv  # two mixer shapes, no layer comparison
BACKENDS = [b for b in ("torch", "cuda", "triton") if b in sys.argv[1:]] or ["torch", "cuda", "triton"]
failures = []
nrel = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()  # noqa: E731


def report(name: str, diff: float, tol: float) -> None:
    ok = diff <= tol
    failures.extend([] if ok else [name])
    print(f"{'ok  ' if ok else 'FAIL'} {name:58s} max|diff| {diff:.2e}  tol {tol:.1e}")


print(f"{torch.cuda.get_device_name()} torch {torch.__version__}; backends {BACKENDS}; fixtures {FIXTURE_DIR}",
      flush=True)
for path in sorted(FIXTURE_DIR.glob("*.pt")):
    fx = torch.load(path, weights_only=True)
    rtol, c_out, c_grad = TOLERANCES[fixture_kind(path.stem)]
    for backend in BACKENDS:
        os.environ["NNUNETV2_MAMBAHOME_SCAN"] = backend
        module = load_reference_module(fx).cuda()
        has_grads = "grad_weight" in fx  # the net fixture is forward-only
        x = fx["input"].cuda().requires_grad_(has_grads)
        with torch.set_grad_enabled(has_grads):
            out = module(x)
        ref_out = fx["output"]
        report(f"{path.stem}[{backend}] output", (out.detach().cpu() - ref_out).abs().max().item(),
               10 * round_up_1sig(c_out * ref_out.abs().max().item()) + rtol * ref_out.abs().max().item())
        if not has_grads:
            continue
        (out * fx["grad_weight"].cuda()).sum().backward()
        report(f"{path.stem}[{backend}] grad_input", (x.grad.cpu() - fx["grad_input"]).abs().max().item(),
               10 * round_up_1sig(c_grad * fx["grad_input"].abs().max().item()))
        ref_grads = convert_reference_state_dict(fx["grad_state_dict"])
        max_ref = max(g.abs().max().item() for g in ref_grads.values())
        params = dict(module.named_parameters())
        # a frozen parameter is a conv bias an instance norm cancels (`modules.cancelled_bias`): its gradient is 0
        worst = max(((params[k].grad.cpu() if params[k].requires_grad else torch.zeros_like(g)) - g).abs().max().item()
                    for k, g in ref_grads.items())
        report(f"{path.stem}[{backend}] grad_state_dict", worst, 10 * round_up_1sig(c_grad * max_ref))
os.environ.pop("NNUNETV2_MAMBAHOME_SCAN", None)

# cross-backend at the network's sequence lengths: 128^3 patch (stages 1..5: 64^3 .. 4^3 tokens) and the
# Dataset502 plans (80x96x128 patch: 40x48x64 .. 5x6x8)
rel = lambda a, b: ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()  # noqa: E731


def mixer_run(mixer, x, backend, autocast=False):
    mixer.backend = backend
    mixer.zero_grad()
    xi = x.clone().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
        out = mixer(xi)
    out.float().square().mean().backward()
    return out.detach().float(), xi.grad, {n: p.grad.clone() for n, p in mixer.named_parameters()}


SHAPES = ((64, 262144), (128, 32768), (256, 4096), (320, 512), (320, 64), (64, 122880), (128, 15360), (256, 1920),
          (320, 240), (32, 4096))
for d_model, length in ((64, 122880), (256, 1920)) if QUICK else SHAPES:
    torch.manual_seed(0)
    mixer = MambaMixer(d_model).cuda()
    x = torch.randn(2, length, d_model, device="cuda")
    o_t, g_t, p_t = mixer_run(mixer, x, "torch")
    for backend in [b for b in BACKENDS if b != "torch"]:
        o_c, g_c, p_c = mixer_run(mixer, x, backend)
        tag = f"mixer d={d_model} L={length} [{backend}]"
        report(f"{tag} output (rel)", rel(o_c, o_t), 1e-4)
        report(f"{tag} grad_input (rel)", rel(g_c, g_t), 1e-3)
        report(f"{tag} param grads (worst rel)", max(rel(p_c[k], p_t[k]) for k in p_t), 1e-3)
        o_a, g_a, p_a = mixer_run(mixer, x, backend, autocast=True)  # the training precision policy
        report(f"{tag} bf16 policy vs fp32 output (norm rel)", nrel(o_a, o_t), 2e-2)
        report(f"{tag} bf16 policy vs fp32 grad_input (norm rel)", nrel(g_a, g_t), 3e-2)
        if backend == "triton":
            _, g_b, p_b = mixer_run(mixer, x, backend, autocast=True)
            same = torch.equal(g_a, g_b) and all(torch.equal(p_a[k], p_b[k]) for k in p_a)
            report(f"{tag} two backward passes bit-identical", 0.0 if same else 1.0, 0.0)

# the bfloat16 token path that nnU-Net's fp16 autocast selects (see precision.py) vs float32, per token layer
# and backend, at stage-1 and bottleneck sizes. Norm-relative errors (bfloat16 keeps 8 mantissa bits); the
# parameter gradients as one concatenated vector (single gates' gradients are sums that nearly cancel).


def run_layer(module, x, autocast: bool):
    module.zero_grad()
    xi = x.clone().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
        out = module(xi)
    out.float().square().mean().backward()
    grads = torch.cat([p.grad.flatten() for p in module.parameters()])
    return (out - xi).detach(), xi.grad, grads


for d_model, length, group, experts in () if QUICK else ((64, 262144, 2048, 4), (320, 512, 128, 16)):
    torch.manual_seed(0)
    x = torch.randn(2, length, d_model, device="cuda")
    layers = {"Mamba layer": ResidualMambaLayer(d_model).cuda(),
              "HoME layer": ResidualHoMELayer(d_model, group, experts).cuda()}
    for backend in BACKENDS:
        os.environ["NNUNETV2_MAMBAHOME_SCAN"] = backend
        for name, layer in layers.items():
            if name == "HoME layer" and backend == "torch":
                continue  # no scan inside
            (o32, g32, p32), (o16, g16, p16) = run_layer(layer, x, False), run_layer(layer, x, True)
            tag = f"{name} d={d_model} L={length} [{backend}] autocast vs fp32"
            report(f"{tag} branch output (rel)", nrel(o16, o32), 2e-2)
            report(f"{tag} grad_input (rel)", nrel(g16, g32), 2e-2)
            report(f"{tag} param grads (rel)", nrel(p16, p32), 5e-2)
os.environ.pop("NNUNETV2_MAMBAHOME_SCAN", None)

print(f"{len(failures)} failed" if failures else "all within tolerance")
sys.exit(1 if failures else 0)
