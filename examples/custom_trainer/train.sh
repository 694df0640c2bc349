#!/usr/bin/env bash
# Example: train your own trainer (my_mambahome_trainers.py, next to this file) with nnU-Net's own command.
#
# Shows the discovery line: `eval "$(nnunetv2-mambahome trainer-path --export)"` puts our trainers on
# nnUNet_extTrainer (keeping what you had there), then this directory is added for yours.
#   usage: DATASET=501 bash examples/custom_trainer/train.sh [extra nnUNetv2_train options, e.g. --npz]
#   env:   TRAINER (default nnUNetTrainerMambaHoMECosineTopK; ..._tiny for a 1-minute CPU run),
#          CONFIG (3d_fullres), FOLD (0), DEVICE (cuda)
# Needs nnUNet_raw / nnUNet_preprocessed / nnUNet_results set and the dataset planned and preprocessed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${DATASET:?set DATASET to an nnU-Net dataset id or name}"
eval "$(nnunetv2-mambahome trainer-path --export)"
export nnUNet_extTrainer="$nnUNet_extTrainer:$here"
nnUNetv2_train "$DATASET" "${CONFIG:-3d_fullres}" "${FOLD:-0}" -tr "${TRAINER:-nnUNetTrainerMambaHoMECosineTopK}" \
  -device "${DEVICE:-cuda}" "$@"
