#!/usr/bin/env bash
# Example: change the Mamba-HoME network through the nnU-Net plans, then train on those plans.
#
# Shows `write-plans --preset ... --set FIELD=JSON`: it copies nnUNetPlans.json to a new plans identifier whose
# configurations build MambaHoMEUNet with the given HoME settings (same preprocessed data, nothing re-run),
# and `nnUNetv2_train -p` on it. Any field of the stage rule can be set (README, "The network").
#   usage: DATASET=501 bash examples/plans_override.sh
#   env:   TRAINER (default nnUNetTrainerMambaHoME; nnUNetTrainerMambaHoMELight_smoke for a 1-minute CPU run),
#          PLANS_NAME (nnUNetPlans_MambaHoME_light_d1), CONFIG (3d_fullres), FOLD (0), DEVICE (cuda)
set -euo pipefail
: "${DATASET:?set DATASET to an nnU-Net dataset id or name}"
plans=${PLANS_NAME:-nnUNetPlans_MambaHoME_light_d1}
eval "$(nnunetv2-mambahome trainer-path --export)"
# light preset, one Mamba + HoME layer per stage, Mamba-HoME blocks on at most 3 stages, 2 slots per expert
nnunetv2-mambahome write-plans -d "$DATASET" --preset light --name "$plans" --force \
  --set depth=1 --set max_token_stages=3 --set slots_per_expert=2
# The plans decide the network (a trainer naming another preset fails); the recipe stays the trainer's.
nnUNetv2_train "$DATASET" "${CONFIG:-3d_fullres}" "${FOLD:-0}" -p "$plans" -tr "${TRAINER:-nnUNetTrainerMambaHoME}" \
  -device "${DEVICE:-cuda}"
