"""The mission's commands, run for real on CPU: make-dataset, plan_and_preprocess, train, predict, evaluate.

3d_fullres for every trainer; the 2d configuration for MambaHoMEUNet and U-Mamba (training and validation).

Uses the brain dataset built from Debian's mricron-data (real T1 + AAL atlas) at 6 mm, small enough for CI. The trainer is a
*user's* subclass of nnUNetTrainerMambaHoMELight_smoke living in its own directory, added to
nnUNet_extTrainer next to ours: this checks both our trainer lookup and that our trainers subclass cleanly.

Under pytest-xdist (scripts/test.sh) every worker prepares its own copy of the dataset (a session fixture in
its own temporary folder); the tests that share a module fixture's training carry one xdist_group each, so that
one worker trains it once.
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import E2E_DATASET_ID as DATASET_ID, N_PROC, run_command as _run, venv_bin as _bin
from nnunetv2_mambahome.metrics import dice

pytestmark = pytest.mark.slow
USER_TRAINER = textwrap.dedent('''
    import random

    import numpy as np
    import torch

    from nnunetv2_mambahome.training import nnUNetTrainerMambaHoMELight_smoke


    class nnUNetTrainerMyMambaHoMECI(nnUNetTrainerMambaHoMELight_smoke):
        """A user's own variant: a little longer than the smoke schedule, seeded so every run sees the same batches."""

        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            random.seed(0)
            np.random.seed(0)
            torch.manual_seed(0)
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = 8
            self.num_iterations_per_epoch = 12
            self.num_val_iterations_per_epoch = 2
''')


@pytest.fixture(scope="module")
def prepared(prepared_dataset, tmp_path_factory):
    """The shared prepared dataset with this module's user trainer directory added to nnUNet_extTrainer."""
    root, raw, env = prepared_dataset
    user_dir = tmp_path_factory.mktemp("user_trainers")
    (user_dir / "my_trainers.py").write_text(USER_TRAINER)
    return root, raw, dict(env, nnUNet_extTrainer=os.pathsep.join([env["nnUNet_extTrainer"], str(user_dir)]))


def _train_and_predict(prepared, trainer: str, configuration: str = "3d_fullres") -> tuple[str, Path]:
    root, raw, env = prepared
    log = _run([_bin("nnUNetv2_train"), str(DATASET_ID), configuration, "0", "-tr", trainer, "-device", "cpu"], env, root)
    out = root / f"pred_{trainer}"
    _run([_bin("nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(out), "-d", str(DATASET_ID), "-c",
          configuration, "-f", "0", "-tr", trainer, "-device", "cpu", "-npp", "1", "-nps", "1"], env, root)
    return log, out


@pytest.fixture(scope="module")
def trained(prepared):
    """Trained without augmentation worker processes and on one thread, so that the seeded run is reproducible."""
    root, raw, env = prepared
    env = dict(env, nnUNet_n_proc_DA="0", NNUNETV2_MAMBAHOME_CPU_THREADS="1")
    log, pred = _train_and_predict((root, raw, env), "nnUNetTrainerMyMambaHoMECI")
    return prepared[0], prepared[1], log, pred


@pytest.mark.xdist_group("e2e_trained")
def test_training_used_our_network_and_validated(trained) -> None:
    root, raw, log, _ = trained
    assert "Mamba-HoME preset 'light'" in log
    assert "; norms InstanceNorm3d; DyT torch; layout standard" in log  # NORM=auto and LAYOUT=auto on a CPU
    model_dir = next((root / "res").glob(f"Dataset{DATASET_ID}_*")) / "nnUNetTrainerMyMambaHoMECI__nnUNetPlans__3d_fullres"
    assert (model_dir / "fold_0" / "checkpoint_final.pth").is_file()
    summary = json.loads((model_dir / "fold_0" / "validation" / "summary.json").read_text())
    assert np.isfinite(summary["foreground_mean"]["Dice"])


def _check_predictions(raw: Path, pred_dir: Path) -> tuple[list[float], list[float]]:
    """Shapes, spacing and label values of every prediction; returns per-class Dice and chance Dice."""
    ids = sorted(json.loads((raw / "dataset.json").read_text())["labels"].values())
    cases = sorted(p.name.replace("_0000.nii.gz", "") for p in (raw / "imagesTs").glob("*_0000.nii.gz"))
    assert len(cases) == 2
    scores, chance = [], []
    for case in cases:
        pred_img = sitk.ReadImage(str(pred_dir / f"{case}.nii.gz"))
        ref_img = sitk.ReadImage(str(raw / "labelsTs" / f"{case}.nii.gz"))
        pred, ref = sitk.GetArrayFromImage(pred_img), sitk.GetArrayFromImage(ref_img)
        assert pred.shape == ref.shape and np.allclose(pred_img.GetSpacing(), ref_img.GetSpacing())
        assert set(np.unique(pred)) <= set(ids)
        for c in ids[1:]:
            scores.append(dice(pred == c, ref == c))
            chance.append(float((ref == c).mean()))  # expected Dice of a random map with the true class frequency
    return scores, chance


@pytest.mark.xdist_group("e2e_trained")
def test_predictions_are_valid_and_beat_chance(trained) -> None:
    _, raw, _, pred = trained
    scores, chance = _check_predictions(raw, pred)
    assert np.mean(scores) > 2 * np.mean(chance), (scores, chance)


def test_paper_trainer_trains_and_predicts(prepared) -> None:
    """The paper network needs sizes divisible by 16: add the documented inheriting configuration, then run."""
    root, raw, env = prepared
    plans_file = root / "pre" / raw.name / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    fitting = [max(16, int(np.ceil(p / 16) * 16)) for p in patch]
    plans["configurations"]["3d_fullres_p16"] = {"inherits_from": "3d_fullres", "patch_size": fitting}
    plans_file.write_text(json.dumps(plans, indent=2))
    log, pred = _train_and_predict(prepared, "nnUNetTrainerMambaHoMEPaper_smoke", "3d_fullres_p16")
    assert "MambaHoMEPaperNet" in log and "AdamW" in log
    _check_predictions(raw, pred)


PEER_SMOKE = ["nnUNetTrainerUMambaBot_smoke", "nnUNetTrainerUMambaEnc_smoke", "nnUNetTrainerTamingSegMamba_smoke",
              "nnUNetTrainerBiSegMamba_smoke", "nnUNetTrainerMultiSegMamba_smoke", "nnUNetTrainerSegMambaSkip_smoke",
              "nnUNetTrainerSegMamba_smoke"]


@pytest.mark.parametrize("trainer", PEER_SMOKE)
def test_peer_trainer_trains_and_predicts(prepared, trainer) -> None:
    """Each peer architecture goes through nnUNetv2_train and nnUNetv2_predict (2 epochs x 3 iterations)."""
    root, raw, _ = prepared
    _, pred = _train_and_predict(prepared, trainer)
    model_dir = next((root / "res").glob(f"Dataset{DATASET_ID}_*")) / f"{trainer}__nnUNetPlans__3d_fullres"
    assert (model_dir / "fold_0" / "checkpoint_final.pth").is_file()
    _check_predictions(raw, pred)


@pytest.fixture(scope="module")
def prepared_2d(prepared):
    """The prepared dataset with nnU-Net's 2d configuration (already in its plans) preprocessed too."""
    root, _, env = prepared
    _run([_bin("nnUNetv2_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", N_PROC], env, root)
    return prepared


@pytest.mark.xdist_group("e2e_2d")
@pytest.mark.parametrize("trainer", ["nnUNetTrainerMambaHoMELight_smoke", "nnUNetTrainerUMambaEnc_smoke"])
def test_2d_configuration_trains_and_validates(prepared_2d, trainer) -> None:
    """MambaHoMEUNet and U-Mamba build for nnU-Net's 2d configuration: nnUNetv2_train DATASET 2d 0 -tr ..."""
    root, _, env = prepared_2d
    log = _run([_bin("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", trainer, "-device", "cpu"], env, root)
    network = "MambaHoMEUNet, Mamba-HoME preset 'light'" if "MambaHoME" in trainer else "UMambaEncUNet, "
    assert network in log
    fold = next((root / "res").glob(f"Dataset{DATASET_ID}_*")) / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert np.isfinite(summary["foreground_mean"]["Dice"])
