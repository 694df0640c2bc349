#!/usr/bin/env bash
# The users' own commands on the GPU machine, end to end, on a small synthetic dataset (no data to carry):
# nnUNetv2_plan_and_preprocess, nnUNetv2_train (TRAINER, default nnUNetTrainerMambaHoME_1epochs: 250 iterations,
# validation, sliding-window validation export), nnUNetv2_predict. nnU-Net's run_training sets
# cudnn.benchmark=True and trains from its multi-process data loaders with pinned memory, which the
# benchmark scripts do not. Logs and predictions' summary go to $OUT/cli_smoke/.
# Needs nnUNet_raw/nnUNet_preprocessed/nnUNet_results set and the trainer path exported (see README.md).
set -euo pipefail
TRAINER=${TRAINER:-nnUNetTrainerMambaHoME_1epochs}
DS=${DS:-990}
out=${OUT:-/tmp}/cli_smoke; mkdir -p "$out"
python3 - "$nnUNet_raw" "$DS" <<'PY'
"""Write Dataset<DS>_Synthetic: 8 training + 2 test cases, one channel, labels 1..2 (two noisy ellipsoids)."""
import json, sys
from pathlib import Path
import numpy as np, SimpleITK as sitk
raw, ds = Path(sys.argv[1]), int(sys.argv[2])
root = raw / f"Dataset{ds:03d}_Synthetic"
for sub in ("imagesTr", "labelsTr", "imagesTs"):
    (root / sub).mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
def case(i):
    shape = (64 + 4 * (i % 3), 80, 72)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    seg = np.zeros(shape, np.uint8)
    for label in (1, 2):
        c = [rng.uniform(0.3, 0.7) * s for s in shape]; r = [rng.uniform(0.1, 0.2) * s for s in shape]
        seg[((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 < 1] = label
    img = (seg * 100.0 + rng.normal(0, 30, shape)).astype(np.float32)
    return img, seg
def write(arr, path):
    im = sitk.GetImageFromArray(arr); im.SetSpacing((1.5, 1.5, 1.5)); sitk.WriteImage(im, str(path))
for i in range(10):
    img, seg = case(i)
    if i < 8:
        write(img, root / "imagesTr" / f"syn_{i:03d}_0000.nii.gz"); write(seg, root / "labelsTr" / f"syn_{i:03d}.nii.gz")
    else:
        write(img, root / "imagesTs" / f"syn_{i:03d}_0000.nii.gz")
(root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1, "b": 2},
                                               "numTraining": 8, "file_ending": ".nii.gz"}))
print("wrote", root)
PY
t0=$(date +%s)
nnUNetv2_plan_and_preprocess -d "$DS" -c 3d_fullres -np 4 > "$out/plan.log" 2>&1 || { tail -30 "$out/plan.log"; exit 1; }
echo "plan_and_preprocess: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
nnUNetv2_train "$DS" 3d_fullres 0 -tr "$TRAINER" > "$out/train.log" 2>&1 || { tail -40 "$out/train.log"; exit 1; }
echo "train: $(( $(date +%s) - t0 )) s"; t0=$(date +%s)
grep -E "scan backend|acceleration|CUDA graph|epoch_time|train_loss|Pseudo dice|Mean Validation Dice" "$out/train.log" | head -20 || true
cp "$nnUNet_results"/Dataset"$DS"_Synthetic/"$TRAINER"__nnUNetPlans__3d_fullres/fold_0/training_log_*.txt "$out/" 2>/dev/null || true
nnUNetv2_predict -i "$nnUNet_raw/Dataset${DS}_Synthetic/imagesTs" -o "$out/pred" -d "$DS" -c 3d_fullres -f 0 \
  -tr "$TRAINER" > "$out/predict.log" 2>&1 || { tail -40 "$out/predict.log"; exit 1; }
echo "predict: $(( $(date +%s) - t0 )) s"; ls "$out/pred"
grep -E "CUDA graph" "$out/predict.log" | head -5 || true
