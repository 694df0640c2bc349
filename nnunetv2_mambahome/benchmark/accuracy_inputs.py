"""Finding what `benchmark accuracy` evaluates: label classes, prediction/reference pairs, volumes on disk."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


class AccuracyInputError(ValueError):
    """A user-facing problem with the inputs (missing folder, unmatched case, bad dataset.json)."""


@dataclass(frozen=True)
class LabelClass:
    """One evaluated class: a dataset.json label, or a region (several label values evaluated as one mask)."""

    name: str
    values: tuple[int, ...]

    @property
    def label(self) -> str:
        return "+".join(str(v) for v in self.values)


@dataclass(frozen=True)
class CasePair:
    case: str
    fold: str  # "" for plain prediction folders
    pred: Path
    ref: Path


@dataclass(frozen=True)
class PredictionSet:
    name: str
    source: str  # human-readable description for the report
    cases: tuple[CasePair, ...]


def read_segmentation(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a label volume as an integer array indexed (z, y, x) with its spacing in the same order.

    SimpleITK reports spacing as (x, y, z) but `GetArrayFromImage` returns a (z, y, x) array, hence the
    reversal; getting this wrong silently scales surface distances along the wrong axes.
    """
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    if array.ndim != 3:
        raise AccuracyInputError(f"{path}: expected a 3D label volume, got an array of shape {array.shape}")
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    return array, spacing


# How far a prediction's grid may be from its reference's and still be the same grid: spacing within this
# relative difference, origins within this fraction of the reference voxel size per axis, direction cosines
# within this absolute difference (float32 rounding in NIfTI headers is ~1e-5 mm; a misplaced prediction is
# off by voxels).
SPACING_RTOL = 1e-3
ORIGIN_TOLERANCE_VOXELS = 0.05
DIRECTION_TOLERANCE = 1e-3


def read_geometry(path: Path) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(origin, direction, spacing) in SimpleITK's (x, y, z) convention, from the header only."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetOrigin(), reader.GetDirection(), reader.GetSpacing()


def check_same_grid(pred_path: Path, ref_path: Path) -> None:
    """AccuracyInputError unless the prediction's origin and direction match its reference's (tolerances above).

    Shape and spacing are compared on the arrays; a prediction in the right shape but the wrong place (origin
    hundreds of mm off, flipped axes) would otherwise be scored as if it were aligned."""
    origin, direction, _ = read_geometry(pred_path)
    ref_origin, ref_direction, ref_spacing = read_geometry(ref_path)
    off = np.abs(np.subtract(origin, ref_origin))
    if np.any(off > ORIGIN_TOLERANCE_VOXELS * np.asarray(ref_spacing)):
        raise AccuracyInputError(f"{pred_path} has origin {tuple(round(o, 3) for o in origin)} mm (x, y, z) but its "
                                 f"reference {ref_path} has {tuple(round(o, 3) for o in ref_origin)}: "
                                 f"off by more than {ORIGIN_TOLERANCE_VOXELS:g} voxel")
    if np.max(np.abs(np.subtract(direction, ref_direction))) > DIRECTION_TOLERANCE:
        raise AccuracyInputError(f"{pred_path} has direction {tuple(round(d, 4) for d in direction)} but its "
                                 f"reference {ref_path} has {tuple(round(d, 4) for d in ref_direction)}")


def load_dataset_json(path: Path) -> tuple[list[LabelClass], str]:
    """Foreground classes (label or region, with names) and the file ending from an nnU-Net dataset.json."""
    try:
        meta = json.loads(Path(path).read_text())
        labels = meta["labels"]
    except (OSError, ValueError, KeyError) as exc:
        raise AccuracyInputError(f"cannot read 'labels' from {path}: {exc}") from exc
    if "ignore" in labels:
        raise AccuracyInputError(
            f"{path} declares an 'ignore' label (sparse annotation); surface metrics against partially "
            "annotated references are not meaningful, so this command does not evaluate such datasets"
        )
    classes = []
    for name, value in labels.items():
        values = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
        if values != (0,):
            classes.append(LabelClass(name=name, values=values))
    if not classes:
        raise AccuracyInputError(f"{path} defines no foreground labels")
    return classes, meta.get("file_ending", ".nii.gz")


def find_dataset_json(explicit: Optional[Path], results_dirs: Sequence[Path], labels_dir: Optional[Path]) -> Path:
    """--dataset-json, else the one nnU-Net copies into each model folder, else the one next to labels."""
    if explicit is not None:
        if not explicit.is_file():
            raise AccuracyInputError(f"--dataset-json {explicit} does not exist")
        return explicit
    candidates = [d / "dataset.json" for d in results_dirs]
    if labels_dir is not None:
        candidates.append(labels_dir.parent / "dataset.json")
    found = [c for c in candidates if c.is_file()]
    if not found:
        tried = ", ".join(str(c) for c in candidates) or "(no results folder or --labels given)"
        raise AccuracyInputError(f"no dataset.json found; tried {tried}; pass --dataset-json")
    first_labels = json.loads(found[0].read_text()).get("labels")
    for other in found[1:]:
        if json.loads(other.read_text()).get("labels") != first_labels:
            raise AccuracyInputError(f"labels in {other} differ from {found[0]}; pass --dataset-json to choose")
    return found[0]


def results_set(
    name: str, model_dir: Path, folds: Optional[Sequence[str]], labels_dir: Optional[Path], file_ending: str
) -> PredictionSet:
    """Validation predictions of an nnU-Net model folder `.../<Dataset>/<Trainer>__<Plans>__<cfg>`.

    Uses `fold_<k>/validation/*<file_ending>` for the requested folds (default: every numbered fold
    present) against `labels_dir`, or `$nnUNet_raw/<Dataset>/labelsTr`, or
    `$nnUNet_preprocessed/<Dataset>/gt_segmentations`.
    """
    if not model_dir.is_dir():
        raise AccuracyInputError(f"--results {name}={model_dir}: folder does not exist")
    fold_names = _select_folds(name, model_dir, folds)
    ref_dir = labels_dir or _default_labels_dir(name, model_dir)
    cases = []
    for fold in fold_names:
        preds = _list_volumes(model_dir / f"fold_{fold}" / "validation", file_ending)
        cases += [_pair(name, case, fold, path, ref_dir, file_ending) for case, path in preds]
    if not cases:
        raise AccuracyInputError(f"--results {name}={model_dir}: no *{file_ending} in fold_*/validation")
    return PredictionSet(name, f"nnU-Net results `{model_dir}`", tuple(cases))


def prediction_set(name: str, pred_dir: Path, labels_dir: Path, file_ending: str) -> PredictionSet:
    """A plain folder of predictions `<case><file_ending>`, matched by file name against `labels_dir`."""
    if not pred_dir.is_dir():
        raise AccuracyInputError(f"--pred {name}={pred_dir}: folder does not exist")
    volumes = _list_volumes(pred_dir, file_ending)
    cases = [_pair(name, case, "", path, labels_dir, file_ending) for case, path in volumes]
    if not cases:
        raise AccuracyInputError(f"--pred {name}={pred_dir}: no *{file_ending} files")
    return PredictionSet(name, f"predictions `{pred_dir}`", tuple(cases))


def _select_folds(name: str, model_dir: Path, folds: Optional[Sequence[str]]) -> list[str]:
    if folds:
        missing = [f for f in folds if not (model_dir / f"fold_{f}" / "validation").is_dir()]
        if missing:
            raise AccuracyInputError(f"--results {name}: no fold_<k>/validation for folds {missing} in {model_dir}")
        return list(folds)
    numbered = [
        m.group(1)
        for p in model_dir.iterdir()
        if (m := re.fullmatch(r"fold_(\d+)", p.name)) and (p / "validation").is_dir()
    ]
    if not numbered:
        raise AccuracyInputError(
            f"--results {name}: no fold_<k>/validation in {model_dir} (for fold_all pass --folds all)"
        )
    return sorted(numbered, key=int)


def _default_labels_dir(name: str, model_dir: Path) -> Path:
    dataset = model_dir.parent.name
    candidates = [
        Path(os.environ[var]) / dataset / sub
        for var, sub in (("nnUNet_raw", "labelsTr"), ("nnUNet_preprocessed", "gt_segmentations"))
        if os.environ.get(var)
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates) or "nothing ($nnUNet_raw and $nnUNet_preprocessed are unset)"
    raise AccuracyInputError(f"--results {name}: reference labels not found; tried {tried}; pass --labels DIR")


def _list_volumes(folder: Path, file_ending: str) -> list[tuple[str, Path]]:
    if not folder.is_dir():
        return []
    return [(p.name[: -len(file_ending)], p) for p in sorted(folder.iterdir()) if p.name.endswith(file_ending)]


def _pair(name: str, case: str, fold: str, pred: Path, ref_dir: Path, file_ending: str) -> CasePair:
    ref = ref_dir / f"{case}{file_ending}"
    if not ref.is_file():
        raise AccuracyInputError(f"set {name}: no reference {ref} for prediction {pred}")
    return CasePair(case=case, fold=fold, pred=pred, ref=ref)
