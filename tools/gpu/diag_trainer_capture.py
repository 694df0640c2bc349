"""Diagnose CUDA-graph capture inside nnU-Net's train_step (for capture failures): nnUNetTrainerMambaHoME on the 502
plans, fixed random batch, `--steps` train_steps with NNUNETV2_MAMBAHOME_ACCEL=graphs and the given scan backend.
During capture, torch's sync debug mode is 'error' (a synchronising call raises where it is made) and the full
traceback of a failed capture is printed. --mode sets torch.cuda.graph's capture_error_mode; --cudnn-benchmark
sets torch.backends.cudnn.benchmark as nnUNetv2_train and `benchmark speed` do."""
import argparse, os, time, traceback
from pathlib import Path

import torch

p = argparse.ArgumentParser()
p.add_argument("--backend", default="triton")
p.add_argument("--mode", default="global", choices=["global", "thread_local", "relaxed"])
p.add_argument("--steps", type=int, default=5)
p.add_argument("--cudnn-benchmark", action="store_true")
args = p.parse_args()
torch.backends.cudnn.benchmark = args.cudnn_benchmark
os.environ.update(NNUNETV2_MAMBAHOME_SCAN=args.backend, NNUNETV2_MAMBAHOME_ACCEL="graphs",
                  nnUNet_preprocessed=str(Path("docs/benchmarks/nnUNet_preprocessed").resolve()))
from nnunetv2_mambahome import cuda_graphs
from nnunetv2_mambahome.benchmark.speed_setup import Setup, Workload, build_trainer, random_batch, dataset_dir

orig_init = torch.cuda.graph.__init__
def init(self, cuda_graph, pool=None, stream=None, capture_error_mode=args.mode):
    orig_init(self, cuda_graph, pool=pool, stream=stream, capture_error_mode=capture_error_mode)
torch.cuda.graph.__init__ = init

orig_capture = cuda_graphs.GraphedForward._capture
def capture(self, x, params):
    torch.cuda.set_sync_debug_mode("error")
    try:
        return orig_capture(self, x, params)
    except Exception:
        traceback.print_exc()
        raise
    finally:
        torch.cuda.set_sync_debug_mode("default")
cuda_graphs.GraphedForward._capture = capture

folder = dataset_dir("502")
w = Workload(str(folder), "3d_fullres", "cuda", (80, 96, 128), 2)
trainer = build_trainer(Setup("nnUNetTrainerMambaHoME", "nnUNetPlans"), w, Path("/tmp/diag_results"))
batch = random_batch(trainer)
from nnunetv2_mambahome.ops import resolve_backend
chosen = resolve_backend(torch.device("cuda"))
print(f"scan backend {chosen.name}: {chosen.reason}", flush=True)
tag = f"[{args.backend} {args.mode} cudnn.benchmark={args.cudnn_benchmark}]"
for i in range(args.steps):
    t = time.perf_counter()
    try:
        out = trainer.train_step(batch)
        torch.cuda.synchronize()
        print(f"{tag} step {i}: loss {out['loss']:.4f} {1e3 * (time.perf_counter() - t):.0f} ms", flush=True)
    except Exception as exc:
        print(f"{tag} step {i} FAILED: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
        traceback.print_exc()
        break
