"""Write an nnU-Net v2 raw dataset folder (`$nnUNet_raw/DatasetXXX_Name`) from in-memory cases.

Layout: imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, imagesTs/<case>_0000.nii.gz, and the
held-out labels in labelsTs/<case>.nii.gz (nnU-Net ignores labelsTs; it is there for evaluation).
The folder is written under a hidden staging name and renamed when complete, so an interrupted
build never looks like a finished dataset.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import nibabel as nib
import numpy as np

from nnunetv2_mambahome.progress import progress

FILE_ENDING = ".nii.gz"
# nnU-Net's planner pools until feature maps reach 4 voxels: 16 per axis leaves at least two poolings, so that
# a U-Net (and the Mamba-HoME stages below full resolution) can be planned at all
MIN_VOXELS_PER_AXIS = 16


@dataclass(frozen=True)
class Case:
    """One single-channel case: image (float32), label (uint8) and their shared voxel->world affine."""

    name: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray


class DatasetExistsError(FileExistsError):
    """The target dataset folder (or another folder with the same dataset id) already exists."""


def resolve_raw_dir(raw_dir: Union[str, Path, None]) -> Path:
    """`raw_dir` if given, else `$nnUNet_raw`; raises ValueError when neither is set."""
    if raw_dir is None:
        raw_dir = os.environ.get("nnUNet_raw")
    if not raw_dir:
        raise ValueError("No nnU-Net raw folder given: pass --raw-dir DIR or set the nnUNet_raw environment variable.")
    return Path(raw_dir).expanduser().resolve()


def dataset_folder(raw_dir: Path, dataset_id: int, name: str) -> Path:
    """`raw_dir/DatasetXXX_Name`, validating the id range and the name as nnU-Net expects them."""
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be in 1..999, got {dataset_id}")
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"dataset name must be non-empty letters, digits and '_', got {name!r}")
    return raw_dir / f"Dataset{dataset_id:03d}_{name}"


def check_grid(spacing: float, shapes: Sequence[Sequence[int]], extents_mm: Sequence[Sequence[float]]) -> None:
    """ValueError (before anything is written) if volumes of these grid `shapes` are too small for nnU-Net to plan on.

    `extents_mm` are the fields of view the grids cover (`augment.Grid.covering`: shape = floor(extent / spacing)
    + 1), so the largest spacing that still fits them all is min(extent) / (MIN_VOXELS_PER_AXIS - 1)."""
    smallest = min(shapes, key=min)
    if min(smallest) >= MIN_VOXELS_PER_AXIS:
        return
    largest = math.floor(min(min(e) for e in extents_mm) / (MIN_VOXELS_PER_AXIS - 1) * 100) / 100
    raise ValueError(f"--spacing {spacing:g} mm gives volumes of {'x'.join(map(str, smallest))} voxels; nnU-Net needs "
                     f"at least {MIN_VOXELS_PER_AXIS} per axis to plan a U-Net: use --spacing {largest:g} or less")


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def _write_case(case: Case, images: Path, labels: Path) -> None:
    if case.image.shape != case.label.shape:
        raise ValueError(f"{case.name}: image shape {case.image.shape} != label shape {case.label.shape}")
    _save_nifti(case.image.astype(np.float32), case.affine, images / f"{case.name}_0000{FILE_ENDING}")
    _save_nifti(case.label.astype(np.uint8), case.affine, labels / f"{case.name}{FILE_ENDING}")


def write_dataset(folder: Path, train: Iterable[Case], test: Iterable[Case], num_train: int, num_test: int,
                  channel_names: Mapping[str, str], labels: Mapping[str, int],
                  extra: Optional[Mapping[str, Any]] = None, force: bool = False) -> Path:
    """Write all cases and dataset.json into `folder`; returns `folder`.

    Refuses an existing folder unless `force`, and always refuses a second folder with the same
    dataset id (nnU-Net could not tell them apart).
    """
    folder = Path(folder)
    prefix = folder.name.split("_", 1)[0] + "_"
    clashes = [p for p in folder.parent.glob(prefix + "*") if p.name != folder.name and p.is_dir()]
    if clashes:
        raise DatasetExistsError(f"{clashes[0]} uses the same dataset id as {folder.name}; choose another "
                                 "--dataset-id or remove that folder.")
    if folder.exists() and not force:
        raise DatasetExistsError(f"{folder} already exists; pass --force (force=True) to overwrite it.")
    if sorted(labels.values()) != list(range(len(labels))) or labels.get("background") != 0:
        raise ValueError(f"labels must be consecutive 0..N-1 with background=0, got {dict(labels)}")
    staging = folder.parent / f".{folder.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    dirs = {d: staging / d for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    for d in dirs.values():
        d.mkdir(parents=True)
    for cases, total, split in ((train, num_train, "Tr"), (test, num_test, "Ts")):
        written = 0
        for case in progress(cases, desc=f"Writing {split} cases", total=total):
            _write_case(case, dirs["images" + split], dirs["labels" + split])
            written += 1
        if written != total:
            raise ValueError(f"expected {total} {split} cases, got {written}")
    dataset_json = {
        "channel_names": dict(channel_names),
        "labels": dict(labels),
        "numTraining": num_train,
        "file_ending": FILE_ENDING,
        **(extra or {}),
    }
    with open(staging / "dataset.json", "w") as f:
        json.dump(dataset_json, f, indent=2)
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder
