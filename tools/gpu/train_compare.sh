#!/usr/bin/env bash
# Mixed-precision stability and a first accuracy point, on the GPU machine (source tools/gpu/install.sh first).
#
# Builds the brain dataset at 3 mm (make-dataset, from the carried .gpu/data/cache) and trains fold 0 for
# EPOCHS x 250 iterations, the three trainers side by side on the one GPU:
#   nnUNetTrainerMambaHoME_<E>epochs        default precision policy (fp16 autocast, bfloat16 token path)
#   nnUNetTrainerMambaHoME_noAMP_<E>epochs  everything float32 (the loss curve to compare with)
#   nnUNetTrainer_<E>epochs                 stock nnU-Net, same data, plans and schedule
# TRAINERS="..." picks a subset (names without the _<E>epochs suffix). Each run is stopped after LIMIT seconds (a stopped run keeps its per-epoch log). Logs, progress.png and
# validation summaries go to $OUT/train_compare.tgz.
set -u
EPOCHS=${EPOCHS:-10}
DATASET=${DATASET:-504}
LIMIT=${LIMIT:-500}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${WORK:-/tmp/mh}
export nnUNet_raw=$work/raw nnUNet_preprocessed=$work/pre nnUNet_results=$work/res nnUNet_compile=f
export NNUNETV2_MAMBAHOME_CACHE=$root/.gpu/data/cache nnUNet_extTrainer=$root/nnunetv2_mambahome/ext_trainers
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-4}
mkdir -p "$work/logs"
t0=$(date +%s)
python3 -m nnunetv2_mambahome.cli make-dataset brain --spacing 3 --dataset-id "$DATASET" --force > "$work/logs/make_dataset.txt" 2>&1 || exit 1
nnUNetv2_plan_and_preprocess -d "$DATASET" -c 3d_fullres -np 8 > "$work/logs/plan_and_preprocess.txt" 2>&1 || exit 1
echo "[train_compare] dataset ready after $(( $(date +%s) - t0 )) s"
TRAINERS=${TRAINERS:-"nnUNetTrainerMambaHoME nnUNetTrainerMambaHoME_noAMP nnUNetTrainer"}
for base in $TRAINERS; do
    tr=${base}_${EPOCHS}epochs
    timeout "$LIMIT" nnUNetv2_train "$DATASET" 3d_fullres 0 -tr "$tr" -device "${DEVICE:-cuda}" > "$work/logs/$tr.txt" 2>&1 &
done
wait
echo "[train_compare] trainings done after $(( $(date +%s) - t0 )) s"
for d in "$nnUNet_results"/Dataset"$DATASET"_*/*__3d_fullres/fold_0; do
    tr=$(basename "$(dirname "$d")"); tr=${tr%%__*}
    grep -hE "Epoch [0-9]+ *$|train_loss|val_loss|Pseudo dice|Epoch time" "$d"/training_log_*.txt > "$work/logs/curve_$tr.txt"
    cp "$d/progress.png" "$work/logs/progress_$tr.png" 2>/dev/null
    cp "$d/validation/summary.json" "$work/logs/summary_$tr.json" 2>/dev/null && echo "[train_compare] $tr: validation done"
    echo "[train_compare] $tr: $(grep -c 'train_loss' "$work/logs/curve_$tr.txt") epochs logged, non-finite losses: $(grep -ciE 'loss -?(nan|inf)' "$work/logs/curve_$tr.txt")"
done
tar czf "${OUT:-$work}/train_compare.tgz" -C "$work" logs
