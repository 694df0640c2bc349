#!/usr/bin/env bash
# Example: fine-tune the official Mamba-HoME network from official weights on your nnU-Net dataset.
#
# Shows `nnUNetv2_train -tr nnUNetTrainerMambaHoMEPaper -pretrained_weights OFFICIAL.pt`: an official train.py
# checkpoint ({"model": state_dict, ...}) or a bare official state_dict loads into MambaHoMEPaperNet, all but
# the segmentation head (so the class count may differ; the input channels must match, 1 for the official
# CT models). The paper network needs patch sizes divisible by 16, so this first adds a configuration
# `<CONFIG>_p16` that inherits the preprocessed data with the nearest larger fitting patch
# (docs/paper_trainer.md). Recipe: the paper's (AdamW 1e-4, cosine, fp32).
#   usage: DATASET=501 WEIGHTS=/path/to/official_model.pt bash examples/finetune_official.sh
#   env:   TRAINER (default nnUNetTrainerMambaHoMEPaper; nnUNetTrainerMambaHoMEPaper_smoke is a tiny network
#          for a CPU try, matching only the tiny weights the tests make), CONFIG (3d_fullres), FOLD (0), DEVICE (cuda)
set -euo pipefail
: "${DATASET:?set DATASET to an nnU-Net dataset id or name}" "${WEIGHTS:?set WEIGHTS to an official checkpoint}"
config=${CONFIG:-3d_fullres}
eval "$(nnunetv2-mambahome trainer-path --export)"
python - "$DATASET" "$config" <<'PY'
import json, sys
from pathlib import Path
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2_mambahome.nets.paper_net import nearest_fitting_sizes

dataset, config = sys.argv[1:]
plans_file = Path(nnUNet_preprocessed) / maybe_convert_to_dataset_name(dataset) / "nnUNetPlans.json"
plans = json.loads(plans_file.read_text())
patch = plans["configurations"][config]["patch_size"]
plans["configurations"][f"{config}_p16"] = {"inherits_from": config, "patch_size": nearest_fitting_sizes(patch)[-1]}
plans_file.write_text(json.dumps(plans, indent=2))
print(f"{plans_file}: configuration {config}_p16 with patch {nearest_fitting_sizes(patch)[-1]} (from {patch})")
PY
nnUNetv2_train "$DATASET" "${config}_p16" "${FOLD:-0}" -tr "${TRAINER:-nnUNetTrainerMambaHoMEPaper}" \
  -pretrained_weights "$WEIGHTS" -device "${DEVICE:-cuda}"
