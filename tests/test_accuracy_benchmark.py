"""`benchmark accuracy` end to end on a tiny fake nnU-Net dataset with two trainers of known quality."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.stats import wilcoxon

from nnunetv2_mambahome.benchmark import accuracy
from nnunetv2_mambahome.metrics import dice, hd95, nsd

DATASET = "Dataset042_Fake"
LABELS = {"background": 0, "liver": 1, "tumour": 2}
SPACING_XYZ = (0.8, 0.8, 2.5)
CASES = [f"case_{i:03d}" for i in range(8)]
FOLDS = {"0": CASES[:4], "1": CASES[4:]}
NO_TUMOUR_CASE = CASES[-1]


def _write(path: Path, array_zyx: np.ndarray) -> None:
    image = sitk.GetImageFromArray(array_zyx.astype(np.uint8))
    image.SetSpacing(SPACING_XYZ)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _reference(rng: np.random.Generator, with_tumour: bool) -> np.ndarray:
    seg = np.zeros((10, 16, 16), np.uint8)
    z, y, x = rng.integers(2, 4), rng.integers(2, 5), rng.integers(2, 5)
    seg[z : z + 5, y : y + 8, x : x + 8] = 1
    if with_tumour:
        seg[z + 1 : z + 3, y + 2 : y + 5, x + 2 : x + 5] = 2
    return seg


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> dict[str, Path]:
    """raw labels + dataset.json, and results folders of trainer A (1-voxel shift along y) and trainer B
    (2-voxel shift along x, and a spurious tumour where the reference has none: HD95 = inf there)."""
    root = tmp_path_factory.mktemp("nnunet")
    raw = root / "raw" / DATASET
    (raw / "labelsTr").mkdir(parents=True)
    dataset_json = json.dumps({"labels": LABELS, "file_ending": ".nii.gz", "numTraining": len(CASES)})
    (raw / "dataset.json").write_text(dataset_json)
    models = {t: root / "results" / DATASET / f"{t}__nnUNetPlans__3d_fullres" for t in ("TrainerA", "TrainerB")}
    rng = np.random.default_rng(0)
    for fold, cases in FOLDS.items():
        for case in cases:
            ref = _reference(rng, with_tumour=case != NO_TUMOUR_CASE)
            _write(raw / "labelsTr" / f"{case}.nii.gz", ref)
            _write(models["TrainerA"] / f"fold_{fold}" / "validation" / f"{case}.nii.gz", np.roll(ref, 1, axis=1))
            pred_b = np.roll(ref, 2, axis=2)
            if case == NO_TUMOUR_CASE:
                pred_b[1, 1, 1] = 2
            _write(models["TrainerB"] / f"fold_{fold}" / "validation" / f"{case}.nii.gz", pred_b)
    for model in models.values():
        (model / "dataset.json").write_text(dataset_json)
    return {"raw": root / "raw", "labels": raw / "labelsTr", **models}


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    accuracy.add_arguments(parser)
    return accuracy.run(parser.parse_args(argv))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _direct(pred_path: Path, ref_path: Path, value: int, tolerance: float) -> tuple[float, float, float]:
    """Metrics computed here from the files, with SimpleITK's (x, y, z) spacing reversed by hand."""
    pred_image, ref_image = sitk.ReadImage(str(pred_path)), sitk.ReadImage(str(ref_path))
    spacing_zyx = ref_image.GetSpacing()[::-1]
    p = sitk.GetArrayFromImage(pred_image) == value
    r = sitk.GetArrayFromImage(ref_image) == value
    return dice(p, r), hd95(p, r, spacing_zyx), nsd(p, r, spacing_zyx, tolerance)


def test_results_folders_report(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(fake["raw"]))
    out = tmp_path / "report"
    argv = ["--results", f"A={fake['TrainerA']}", "--results", f"B={fake['TrainerB']}",
            "--nsd-tolerance", "1.0", "--out", str(out), "-np", "2"]
    assert _run(argv) == 0
    for name in ("accuracy.md", "per_case.csv", "paired_test.csv", "dice_boxplot.png", "hd95_boxplot.png"):
        assert (out / name).stat().st_size > 0, name

    rows = _read_csv(out / "per_case.csv")
    assert len(rows) == 2 * len(CASES) * 2  # sets x cases x classes
    fold_of = {case: fold for fold, cases in FOLDS.items() for case in cases}
    means: dict[str, dict[str, dict[str, list[float]]]] = {"A": {}, "B": {}}  # set -> metric -> case -> values
    for row in rows:
        model = fake["TrainerA" if row["set"] == "A" else "TrainerB"]
        pred = model / f"fold_{fold_of[row['case']]}" / "validation" / f"{row['case']}.nii.gz"
        expected = _direct(pred, fake["labels"] / f"{row['case']}.nii.gz", int(row["label"]), 1.0)
        got = tuple(float(row[m]) for m in ("dice", "hd95", "nsd"))
        assert got == pytest.approx(expected), row
        assert row["fold"] == fold_of[row["case"]]
        assert row["class"] == {"1": "liver", "2": "tumour"}[row["label"]]
        for metric, value in zip(("dice", "hd95"), expected):
            means[row["set"]].setdefault(metric, {}).setdefault(row["case"], []).append(value)

    # The constructed edge cases came out as documented: both empty for A, one empty for B.
    no_tumour = {r["set"]: r for r in rows if r["case"] == NO_TUMOUR_CASE and r["label"] == "2"}
    assert (no_tumour["A"]["dice"], no_tumour["A"]["hd95"], no_tumour["A"]["nsd"]) == ("1.0", "0.0", "1.0")
    assert (no_tumour["B"]["dice"], no_tumour["B"]["hd95"], no_tumour["B"]["nsd"]) == ("0.0", "inf", "0.0")

    tests = {t["metric"]: t for t in _read_csv(out / "paired_test.csv")}
    dice_a = [np.mean(means["A"]["dice"][c]) for c in CASES]
    dice_b = [np.mean(means["B"]["dice"][c]) for c in CASES]
    expected = wilcoxon(dice_a, dice_b)
    assert (tests["dice"]["set_a"], tests["dice"]["set_b"], int(tests["dice"]["n"])) == ("A", "B", 8)
    assert float(tests["dice"]["statistic"]) == pytest.approx(expected.statistic)
    assert float(tests["dice"]["pvalue"]) == pytest.approx(expected.pvalue)

    finite = [c for c in CASES if c != NO_TUMOUR_CASE]  # B's per-case mean HD95 is inf there
    hd95_a, hd95_b = ([np.mean(means[s]["hd95"][c]) for c in finite] for s in ("A", "B"))
    expected = wilcoxon(hd95_a, hd95_b)
    assert (int(tests["hd95"]["n"]), int(tests["hd95"]["n_excluded"])) == (7, 1)
    assert float(tests["hd95"]["pvalue"]) == pytest.approx(expected.pvalue)

    markdown = (out / "accuracy.md").read_text()
    for text in ("liver (1)", "tumour (2)", "Per fold", "Paired test: A vs B", "(1 inf)"):
        assert text in markdown, text


def test_prediction_folders_and_too_few_pairs(fake, tmp_path):
    out = tmp_path / "report"
    pred_a, pred_b = (fake[t] / "fold_0" / "validation" for t in ("TrainerA", "TrainerB"))
    argv = ["--pred", f"A={pred_a}", "--pred", f"B={pred_b}", "--labels", str(fake["labels"]),
            "--compare", "B", "A", "--out", str(out), "-np", "1"]
    assert _run(argv) == 0  # dataset.json found next to --labels
    rows = _read_csv(out / "per_case.csv")
    assert {r["case"] for r in rows} == set(FOLDS["0"]) and {r["fold"] for r in rows} == {""}
    for row in rows[:4]:
        pred = (pred_a if row["set"] == "A" else pred_b) / f"{row['case']}.nii.gz"
        expected = _direct(pred, fake["labels"] / f"{row['case']}.nii.gz", int(row["label"]), 2.0)
        assert tuple(float(row[m]) for m in ("dice", "hd95", "nsd")) == pytest.approx(expected)
    tests = {t["metric"]: t for t in _read_csv(out / "paired_test.csv")}
    assert (tests["dice"]["set_a"], tests["dice"]["n"], tests["dice"]["pvalue"]) == ("B", "4", "")
    assert "at least 6" in tests["dice"]["note"]
    assert "n/a" in (out / "accuracy.md").read_text()


def test_selected_fold(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(fake["raw"]))
    out = tmp_path / "report"
    assert _run(["--results", f"A={fake['TrainerA']}", "--folds", "1", "--out", str(out), "-np", "1"]) == 0
    rows = _read_csv(out / "per_case.csv")
    assert {r["case"] for r in rows} == set(FOLDS["1"]) and {r["fold"] for r in rows} == {"1"}
    assert not (out / "paired_test.csv").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--pred", "A={pred}"], "needs --labels"),
        (["--results", "A={model}", "--results", "B={model}", "--compare", "A", "C"], "unknown set"),
        (["--results", "A={model}", "--results", "A={model}"], "unique"),
        (["--results", "A={model}", "--folds", "7"], "folds ['7']"),
        ([], "at least one"),
    ],
)
def test_input_errors(fake, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("nnUNet_raw", str(fake["raw"]))
    pred = fake["TrainerA"] / "fold_0" / "validation"
    argv = [a.format(pred=pred, model=fake["TrainerA"]) for a in argv]
    assert _run(argv + ["--out", str(tmp_path / "report")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_missing_reference_labels_are_reported(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    assert _run(["--results", f"A={fake['TrainerA']}", "--out", str(tmp_path / "r")]) == 2
    assert "pass --labels" in capsys.readouterr().err


def test_nnunet_empty_convention_matches_nnunet_summary(fake, tmp_path, monkeypatch, capsys):
    """--empty-masks nnunet: per-class means equal nnU-Net's own compute_metrics_on_folder (nanmean over cases)."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    monkeypatch.setenv("nnUNet_raw", str(fake["raw"]))
    out = tmp_path / "report"
    argv = ["--results", f"A={fake['TrainerA']}", "--folds", "1", "--empty-masks", "nnunet", "--out", str(out),
            "-np", "1"]
    assert _run(argv) == 0
    err = capsys.readouterr().err
    assert "evaluating" in err and "4/4" in err  # the progress bar over the fold's 4 cases
    rows = _read_csv(out / "per_case.csv")
    no_tumour = next(r for r in rows if r["case"] == NO_TUMOUR_CASE and r["label"] == "2")
    assert (no_tumour["dice"], no_tumour["hd95"], no_tumour["nsd"]) == ("nan", "nan", "nan")

    summary = compute_metrics_on_folder(str(fake["labels"]), str(fake["TrainerA"] / "fold_1" / "validation"),
                                        str(tmp_path / "summary.json"), SimpleITKIO(), ".nii.gz", [1, 2], None, 1)
    markdown = (out / "accuracy.md").read_text()
    for label, name in ((1, "liver"), (2, "tumour")):
        ours = [float(r["dice"]) for r in rows if r["label"] == str(label)]
        assert np.nanmean(ours) == pytest.approx(summary["mean"][label]["Dice"])
        assert f"| {name} ({label}) | {summary['mean'][label]['Dice']:.3f}" in markdown
    assert "`--empty-masks nnunet`" in markdown
