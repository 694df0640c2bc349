#!/usr/bin/env bash
# Example: stock nnU-Net vs Mamba-HoME over 5-fold cross-validation, ensembled and compared per case.
#
# Shows the whole comparison on one dataset: every fold of both trainers (`--npz` keeps the validation
# probabilities for ensembling; folds whose probabilities exist are skipped, so a re-run resumes), then
# nnU-Net's `nnUNetv2_find_best_configuration` (cross-validation summaries, the ensemble of the two, the
# postprocessing and the inference command), then `nnunetv2-mambahome benchmark accuracy` on the
# cross-validation predictions of both and of their ensemble: Dice / HD95 / NSD per class and fold, and a
# Wilcoxon signed-rank test stock vs Mamba-HoME (with >= 6 cases).
#   usage: DATASET=501 bash examples/compare_5fold.sh
#   env:   STOCK (nnUNetTrainer), MAMBA (nnUNetTrainerMambaHoME), FOLDS ("0 1 2 3 4"), CONFIG (3d_fullres),
#          DEVICE (cuda), OUT (report folder, default ./compare_<DATASET>)
# Runs for days on a GPU at full size; FOLDS="0" with short trainers (e.g. MAMBA=nnUNetTrainerMambaHoMELight_smoke)
# runs in minutes on a CPU.
set -euo pipefail
: "${DATASET:?set DATASET to an nnU-Net dataset id or name}"
stock=${STOCK:-nnUNetTrainer} mamba=${MAMBA:-nnUNetTrainerMambaHoME} config=${CONFIG:-3d_fullres}
folds=${FOLDS:-0 1 2 3 4} out=${OUT:-compare_$DATASET}
eval "$(nnunetv2-mambahome trainer-path --export)"
name=$(python -c "import sys; from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name as n; print(n(sys.argv[1]))" "$DATASET")
model() { echo "$nnUNet_results/$name/$1__nnUNetPlans__$config"; }

for trainer in "$stock" "$mamba"; do
  for fold in $folds; do
    if compgen -G "$(model "$trainer")/fold_$fold/validation/*.npz" >/dev/null; then
      echo "[compare] $trainer fold $fold: done before, skipped"; continue
    fi
    echo "[compare] training $trainer fold $fold"
    nnUNetv2_train "$DATASET" "$config" "$fold" -tr "$trainer" --npz -device "${DEVICE:-cuda}"
  done
done

echo "[compare] nnUNetv2_find_best_configuration: cross-validation results, ensemble, postprocessing"
# shellcheck disable=SC2086  # $folds is a list
nnUNetv2_find_best_configuration "$DATASET" -c "$config" -tr "$stock" "$mamba" -f $folds -np 2

echo "[compare] benchmark accuracy -> $out"
ensemble="$nnUNet_results/$name/ensembles/ensemble___${stock}__nnUNetPlans__${config}___${mamba}__nnUNetPlans__${config}___${folds// /_}"
nnunetv2-mambahome benchmark accuracy --results "stock=$(model "$stock")" --results "mambahome=$(model "$mamba")" \
  --pred "ensemble=$ensemble" --labels "$nnUNet_raw/$name/labelsTr" --folds $folds --compare stock mambahome \
  --out "$out"
