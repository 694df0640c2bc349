#!/usr/bin/env bash
# The main command: from a fresh clone, set up ./.venv and run Mamba-HoME end to end on real brain MRI.
#   make-dataset brain -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train -tr <Mamba-HoME trainer>
#   -> nnUNetv2_predict on held-out cases -> Dice per class vs an untrained network + overlay PNGs.
# Everything lands in $DEMO_DIR (default ./demo_output). Re-running reuses finished steps.
set -euo pipefail
cd "$(dirname "$0")/.."
STARTED=$(date +%s)
source scripts/setup_env.sh
DEMO_DIR=$(realpath -m "${DEMO_DIR:-demo_output}")
export nnUNet_raw="$DEMO_DIR/nnUNet_raw" nnUNet_preprocessed="$DEMO_DIR/nnUNet_preprocessed" \
       nnUNet_results="$DEMO_DIR/nnUNet_results" nnUNet_compile=f
DATASET_ID=${DATASET_ID:-501}
if "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  DEVICE=cuda; SPACING=${SPACING:-1.5}; NUM_TRAIN=${NUM_TRAIN:-20}; TRAINER=${TRAINER:-nnUNetTrainerMambaHoME_50epochs}
else  # CPU: 5 mm volumes and a short schedule that finish in reasonable time on 2 cores
  DEVICE=cpu; SPACING=${SPACING:-5}; NUM_TRAIN=${NUM_TRAIN:-8}; TRAINER=${TRAINER:-nnUNetTrainerMambaHoMELight_demo}
  export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-2}
fi
NUM_TEST=${NUM_TEST:-3}
echo "[demo] device=$DEVICE spacing=${SPACING}mm train=$NUM_TRAIN test=$NUM_TEST trainer=$TRAINER outputs=$DEMO_DIR"

RAW=$(ls -d "$nnUNet_raw"/Dataset${DATASET_ID}_* 2>/dev/null | head -n1 || true)
if [ -z "$RAW" ]; then
  echo "[demo] 1/5 building the brain dataset (ch2 T1 + AAL atlas from Debian's mricron-data)"
  nnunetv2-mambahome make-dataset brain --dataset-id "$DATASET_ID" --spacing "$SPACING" \
    --num-train "$NUM_TRAIN" --num-test "$NUM_TEST"
  RAW=$(ls -d "$nnUNet_raw"/Dataset${DATASET_ID}_* | head -n1)
fi
NAME=$(basename "$RAW")
if [ ! -f "$nnUNet_preprocessed/$NAME/nnUNetPlans.json" ]; then
  echo "[demo] 2/5 nnUNetv2_plan_and_preprocess"
  nnUNetv2_plan_and_preprocess -d "$DATASET_ID" -c 3d_fullres -np 2
fi
MODEL="$nnUNet_results/$NAME/${TRAINER}__nnUNetPlans__3d_fullres/fold_0"
if [ ! -f "$MODEL/checkpoint_final.pth" ]; then
  echo "[demo] 3/5 nnUNetv2_train $DATASET_ID 3d_fullres 0 -tr $TRAINER -device $DEVICE"
  CONT=(); [ -f "$MODEL/checkpoint_latest.pth" ] && CONT=(--c)
  nnUNetv2_train "$DATASET_ID" 3d_fullres 0 -tr "$TRAINER" -device "$DEVICE" "${CONT[@]}"
fi
echo "[demo] 4/5 nnUNetv2_predict on the held-out cases"
nnUNetv2_predict -i "$RAW/imagesTs" -o "$DEMO_DIR/predictions" -d "$DATASET_ID" -c 3d_fullres -f 0 \
  -tr "$TRAINER" -device "$DEVICE" -npp 1 -nps 1
echo "[demo] 5/5 evaluation and report"
nnunetv2-mambahome demo-report -d "$DATASET_ID" --pred "$DEMO_DIR/predictions" -tr "$TRAINER" \
  --out "$DEMO_DIR/report" --device "$DEVICE" --started "$STARTED"
echo "[demo] done in $(( ($(date +%s) - STARTED) / 60 )) min: report $DEMO_DIR/report/report.md, figures $DEMO_DIR/report/*.png"
