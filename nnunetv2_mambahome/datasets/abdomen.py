"""Abdomen dataset: TotalSegmentator's reference CT and MR cases with labels remapped by organ name.

The sdist ships one abdominal CT (labelled with the `total` classes) and one abdominal MR slab
(labelled with the `total_mr` classes). Their label ids differ, so labels are remapped BY NAME,
using `class_map` parsed (never imported) from the sdist's `map_to_binary.py`, onto ABDOMEN_ORGANS:
organs both scans contain with enough voxels to learn from. Cases alternate CT / MR, each a seeded
deformation + intensity variation of its source (augment.py). Train and test cases come from the
same two subjects, so the held-out test measures robustness to these variations, not to new anatomy.

CT and MR share one input channel, named "zscore": nnU-Net then normalises each image by its own
mean/std. The channel name "CT" would select nnU-Net's CT normalisation (clipping to dataset-wide
HU percentiles of the foreground), which is meaningless for the arbitrary MR intensity scale.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import nibabel as nib
import numpy as np

from nnunetv2_mambahome.datasets import augment, sources
from nnunetv2_mambahome.datasets.nnunet_raw import Case, check_grid, dataset_folder, resolve_raw_dir, write_dataset

ABDOMEN_ORGANS = ("spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
                  "aorta", "inferior_vena_cava")
ABDOMEN_LABELS: dict[str, int] = {"background": 0, **{name: i for i, name in enumerate(ABDOMEN_ORGANS, 1)}}
REFERENCE = "tests/reference_files/"
# modality -> (image file, segmentation file, TotalSegmentator task naming the segmentation's ids)
ABDOMEN_SOURCES = {
    "ct": (REFERENCE + "example_ct.nii.gz", REFERENCE + "example_seg_fast_force_split.nii.gz", "total"),
    "mr": (REFERENCE + "example_mr_sm.nii.gz", REFERENCE + "example_seg_mr.nii.gz", "total_mr"),
}
# Both sources are thin in z (the MR slab is 20 slices): mostly in-plane rotation and shift.
SPATIAL = augment.SpatialParams(max_rotation_deg=(3.0, 3.0, 10.0), max_shift_mm=(8.0, 8.0, 3.0))
# CT numbers are calibrated: only mild gamma/bias; MR gets the full intensity variation.
INTENSITY = {
    "ct": augment.IntensityParams(gamma_range=(0.9, 1.1), bias_log_std=0.03, gain_range=(0.97, 1.03),
                                  max_offset=0.01, noise_std_range=(0.002, 0.01)),
    "mr": augment.IntensityParams(),
}


def read_class_map(map_to_binary: Path, task: str) -> dict[int, str]:
    """`class_map[task]` (label id -> name) from TotalSegmentator's map_to_binary.py, via `ast` (no import)."""
    tree = ast.parse(Path(map_to_binary).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "class_map" for t in node.targets):
            return {int(k): str(v) for k, v in ast.literal_eval(node.value)[task].items()}
    raise ValueError(f"no `class_map = {{...}}` literal found in {map_to_binary}")


def remap_by_name(seg: np.ndarray, class_map: dict[int, str], labels: dict[str, int]) -> np.ndarray:
    """Relabel `seg` (ids of `class_map`) to `labels` by name; names not in `labels` become background."""
    lut = np.zeros(max(max(class_map), int(seg.max())) + 1, dtype=np.uint8)
    by_name = {name: i for i, name in class_map.items()}
    missing = [n for n in labels if n != "background" and n not in by_name]
    if missing:
        raise ValueError(f"organs {missing} are not in this class map")
    for name, new in labels.items():
        if name != "background":
            lut[by_name[name]] = new
    return lut[seg]


@dataclass(frozen=True)
class AbdomenSource:
    """One real scan with remapped labels and the output grid (its field of view at the chosen spacing)."""

    modality: str
    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    grid: augment.Grid
    value_range: tuple[float, float]


def load_abdomen_sources(spacing: float = 3.0, cache: Optional[Path] = None) -> dict[str, AbdomenSource]:
    """Load the CT and MR reference cases (fetching the sdist once) with labels remapped to ABDOMEN_LABELS."""
    root = sources.totalsegmentator_files(cache)
    loaded, extents = {}, []
    for modality, (image_file, seg_file, task) in ABDOMEN_SOURCES.items():
        img, seg = nib.load(str(root / image_file)), nib.load(str(root / seg_file))
        if img.shape != seg.shape or not np.allclose(img.affine, seg.affine, atol=1e-3):
            raise ValueError(f"{image_file} and {seg_file} are not on the same grid")
        image = np.asarray(img.dataobj, dtype=np.float32)
        class_map = read_class_map(root / "totalsegmentator/map_to_binary.py", task)
        labels = remap_by_name(np.asarray(seg.dataobj).astype(np.int64), class_map, ABDOMEN_LABELS)
        lo, hi = augment.world_box(img.affine, (0, 0, 0), np.array(img.shape) - 1)
        loaded[modality] = AbdomenSource(modality, image, labels, img.affine, augment.Grid.covering(lo, hi, spacing),
                                         (float(image.min()), float(image.max())))
        extents.append(hi - lo)
    check_grid(spacing, [s.grid.shape for s in loaded.values()], extents)
    return loaded


def make_abdomen_case(source: AbdomenSource, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One deformed, intensity-varied (image float32, label uint8) pair on `source.grid`."""
    points = augment.sample_source_points(rng, source.grid, SPATIAL)
    image = augment.warp(source.image, source.affine, points, order=1, cval=source.value_range[0])
    label = augment.warp(source.labels, source.affine, points, order=0, cval=0).astype(np.uint8)
    image = augment.augment_intensity(rng, image, source.value_range, source.grid.spacing, INTENSITY[source.modality])
    return image, label


def _cases(srcs: dict[str, AbdomenSource], split: str, count: int, seed: int) -> Iterator[Case]:
    order = list(srcs)
    prefix = "abdomen" if split == "train" else "abdomen_test"
    for i in range(count):
        source = srcs[order[i % len(order)]]
        image, label = make_abdomen_case(source, augment.case_rng(seed, split, i))
        yield Case(f"{prefix}_{i:03d}_{source.modality}", image, label, source.grid.affine)


def build_abdomen_dataset(raw_dir: Union[str, Path, None] = None, dataset_id: int = 502,
                          name: str = "MambaHoMEAbdomen", num_train: int = 8, num_test: int = 2,
                          spacing: float = 3.0, seed: int = 0, force: bool = False,
                          cache: Optional[Path] = None) -> Path:
    """Write the CT+MR abdomen dataset as nnU-Net raw data under `raw_dir` (default `$nnUNet_raw`); returns its folder."""
    folder = dataset_folder(resolve_raw_dir(raw_dir), dataset_id, name)
    srcs = load_abdomen_sources(spacing, cache)
    extra = {
        "name": name,
        "description": "TotalSegmentator reference abdominal CT and MR, labels remapped by organ name; cases "
                       "alternate CT/MR and are seeded deformation + intensity variations of these two scans. "
                       "Single channel 'zscore': per-image z-score normalisation suits both modalities.",
        "reference": f"totalsegmentator=={sources.TOTALSEG_VERSION} sdist (PyPI), tests/reference_files",
        "licence": "Apache-2.0 (TotalSegmentator source distribution)",
        "mambahome": {"builder": "abdomen", "seed": seed, "spacing": spacing, "test_labels": "labelsTs",
                      "sources": {m: list(v) for m, v in ABDOMEN_SOURCES.items()}},
    }
    return write_dataset(folder, _cases(srcs, "train", num_train, seed), _cases(srcs, "test", num_test, seed),
                         num_train, num_test, channel_names={"0": "zscore"}, labels=ABDOMEN_LABELS, extra=extra,
                         force=force)
