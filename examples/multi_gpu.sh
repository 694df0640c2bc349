#!/usr/bin/env bash
# Example: train Mamba-HoME on several GPUs of one machine with nnU-Net's DDP (`-num_gpus`).
#
# Shows nnU-Net's own multi-GPU launch, unchanged: one process per GPU (NCCL), the plans' batch size split
# across them (it is the global batch), checkpoints and the log written by rank 0. Our networks use every
# parameter in every step, so nnU-Net's DDP (without find_unused_parameters) works as is; tests/test_ddp_cpu.py
# checks the averaged gradients on 2 CPU processes. nnU-Net implements -num_gpus > 1 for CUDA only, so this
# script stops with exit code 2 when the machine has fewer GPUs than asked.
#   usage: DATASET=501 NUM_GPUS=2 bash examples/multi_gpu.sh
#   env:   TRAINER (nnUNetTrainerMambaHoME), CONFIG (3d_fullres), FOLD (0); CUDA_VISIBLE_DEVICES picks the GPUs
set -euo pipefail
: "${DATASET:?set DATASET to an nnU-Net dataset id or name}"
gpus=${NUM_GPUS:-2}
available=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$available" -lt "$gpus" ]; then
  echo "error: -num_gpus $gpus needs $gpus CUDA GPUs; this machine has $available (nnU-Net's DDP is CUDA only)" >&2
  exit 2
fi
eval "$(nnunetv2-mambahome trainer-path --export)"
nnUNetv2_train "$DATASET" "${CONFIG:-3d_fullres}" "${FOLD:-0}" -tr "${TRAINER:-nnUNetTrainerMambaHoME}" -num_gpus "$gpus"
