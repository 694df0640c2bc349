"""The mission's commands, run for real on CPU: make-dataset, plan_and_preprocess, train, predict, evaluate.

Uses the brain dataset built from Debian's mricron-data (real T1 + AAL atlas) at 6 mm, small enough for CI. The trainer is a
*user's* subclass of nnUNetTrainerMambaHoMELight_smoke living in its own directory, added to
nnUNet_extTrainer next to ours: this checks both our trainer lookup and that our trainers subclass cleanly.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_mambahome.metrics import dice
from nnunetv2_mambahome.trainer_path import trainer_dir

pytestmark = pytest.mark.slow
DATASET_ID = 951
USER_TRAINER = textwrap.dedent('''
    from nnunetv2_mambahome.training import nnUNetTrainerMambaHoMELight_smoke


    class nnUNetTrainerMyMambaHoMECI(nnUNetTrainerMambaHoMELight_smoke):
        """A user's own variant: a little longer than the smoke schedule."""

        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = 4
            self.num_iterations_per_epoch = 10
            self.num_val_iterations_per_epoch = 2
''')


def _run(cmd: list[str], env: dict, cwd: Path) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    user_dir = root / "user_trainers"
    user_dir.mkdir()
    (user_dir / "my_trainers.py").write_text(USER_TRAINER)
    env = dict(os.environ, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"),
               nnUNet_results=str(root / "res"), nnUNet_extTrainer=os.pathsep.join([trainer_dir(), str(user_dir)]),
               nnUNet_n_proc_DA="2", nnUNet_compile="f", PYTHONUNBUFFERED="1")
    bindir = Path(sys.executable).parent
    _run([str(bindir / "nnunetv2-mambahome"), "make-dataset", "brain", "--dataset-id", str(DATASET_ID),
          "--spacing", "6", "--num-train", "6", "--num-test", "2"], env, root)
    _run([str(bindir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "2"], env, root)
    log = _run([str(bindir / "nnUNetv2_train"), str(DATASET_ID), "3d_fullres", "0", "-tr",
                "nnUNetTrainerMyMambaHoMECI", "-device", "cpu"], env, root)
    raw = next((root / "raw").glob(f"Dataset{DATASET_ID}_*"))
    _run([str(bindir / "nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(root / "pred"), "-d",
          str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "-tr", "nnUNetTrainerMyMambaHoMECI", "-device", "cpu",
          "-npp", "1", "-nps", "1"], env, root)
    return root, raw, log


def test_training_used_our_network_and_validated(trained) -> None:
    root, raw, log = trained
    assert "Mamba-HoME preset 'light'" in log
    model_dir = next((root / "res").glob(f"Dataset{DATASET_ID}_*")) / "nnUNetTrainerMyMambaHoMECI__nnUNetPlans__3d_fullres"
    assert (model_dir / "fold_0" / "checkpoint_final.pth").is_file()
    summary = json.loads((model_dir / "fold_0" / "validation" / "summary.json").read_text())
    assert np.isfinite(summary["foreground_mean"]["Dice"])


def test_predictions_are_valid_and_beat_chance(trained) -> None:
    root, raw, _ = trained
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    ids = sorted(v for v in labels.values())
    cases = sorted(p.name.replace("_0000.nii.gz", "") for p in (raw / "imagesTs").glob("*_0000.nii.gz"))
    assert len(cases) == 2
    scores, chance = [], []
    for case in cases:
        pred_img = sitk.ReadImage(str(root / "pred" / f"{case}.nii.gz"))
        ref_img = sitk.ReadImage(str(raw / "labelsTs" / f"{case}.nii.gz"))
        pred, ref = sitk.GetArrayFromImage(pred_img), sitk.GetArrayFromImage(ref_img)
        assert pred.shape == ref.shape and np.allclose(pred_img.GetSpacing(), ref_img.GetSpacing())
        assert set(np.unique(pred)) <= set(ids)
        for c in ids[1:]:
            scores.append(dice(pred == c, ref == c))
            chance.append(float((ref == c).mean()))  # expected Dice of a random map with the true class frequency
    assert np.mean(scores) > 2 * np.mean(chance), (scores, chance)
