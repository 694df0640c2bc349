"""Brain dataset: the MNI "ch2" T1 template labelled by the AAL atlas, grouped into 8 anatomical classes.

AAL's 116 regions are far too many (and too small at demo resolutions) for a CPU demo, so they are
grouped by region-name prefix into lobes/structures. Every case is the same real head seen through
a different seeded deformation and intensity change (see augment.py); train and held-out test
cases come from disjoint random streams.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import nibabel as nib
import numpy as np
from scipy import ndimage

from nnunetv2_mambahome.datasets import augment, sources
from nnunetv2_mambahome.datasets.nnunet_raw import Case, check_grid, dataset_folder, resolve_raw_dir, write_dataset

# class name -> AAL region-name prefixes (names are like "Frontal_Sup_Orb_L", "Vermis_4_5").
AAL_GROUPS: dict[str, tuple[str, ...]] = {
    "frontal": ("Precentral", "Frontal", "Rolandic_Oper", "Supp_Motor_Area", "Rectus", "Paracentral_Lobule"),
    "parietal": ("Postcentral", "Parietal", "SupraMarginal", "Angular", "Precuneus"),
    "occipital": ("Calcarine", "Cuneus", "Lingual", "Occipital"),
    "temporal": ("Temporal", "Heschl", "Fusiform"),
    "insula_cingulate_olfactory": ("Insula", "Cingulum", "Olfactory"),
    "hippocampus_amygdala": ("Hippocampus", "ParaHippocampal", "Amygdala"),
    "basal_ganglia_thalamus": ("Caudate", "Putamen", "Pallidum", "Thalamus"),
    "cerebellum": ("Cerebelum", "Vermis"),  # sic: AAL spells it "Cerebelum"
}
BRAIN_LABELS: dict[str, int] = {"background": 0, **{name: i for i, name in enumerate(AAL_GROUPS, 1)}}
CROPS = ("head", "brain", "none")
HEAD_THRESHOLD = 20  # ch2 is uint8; air is below this
BRAIN_MARGIN_MM = 10.0
SPATIAL = augment.SpatialParams()
INTENSITY = augment.IntensityParams()


def read_aal_names(path: Path) -> dict[int, str]:
    """AAL index -> region name from `aal.nii.txt` (lines like `1 Precentral_L 2001`)."""
    names = {}
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if fields:
            names[int(fields[0])] = fields[1]
    return names


def group_aal(names: dict[int, str]) -> dict[int, int]:
    """AAL index -> class id of BRAIN_LABELS; raises ValueError unless every name matches exactly one group."""
    mapping, problems = {}, []
    for index, name in names.items():
        hits = [g for g, prefixes in AAL_GROUPS.items() if name.startswith(prefixes)]
        if len(hits) == 1:
            mapping[index] = BRAIN_LABELS[hits[0]]
        else:
            problems.append(f"{name} -> {hits or 'no group'}")
    if problems:
        raise ValueError("AAL names not assigned to exactly one class: " + "; ".join(problems))
    return mapping


@dataclass(frozen=True)
class BrainTemplate:
    """The real source volumes plus the output grid every case is resampled onto."""

    image: np.ndarray  # float32, anti-alias smoothed for the output spacing
    labels: np.ndarray  # uint8 class ids (BRAIN_LABELS)
    affine: np.ndarray  # voxel -> world of image/labels
    grid: augment.Grid
    value_range: tuple[float, float]


def load_brain_template(spacing: float = 1.5, crop: str = "head", cache: Optional[Path] = None) -> BrainTemplate:
    """Load ch2 + grouped AAL (fetching them once) and define the output grid at `spacing` mm."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    folder = sources.mricron_templates(cache)
    t1, aal = nib.load(str(folder / "ch2.nii.gz")), nib.load(str(folder / "aal.nii.gz"))
    if t1.shape != aal.shape or not np.allclose(t1.affine, aal.affine):
        raise ValueError("ch2.nii.gz and aal.nii.gz are not on the same grid")
    image = np.asarray(t1.dataobj, dtype=np.float32)
    aal_ids = np.asarray(aal.dataobj).astype(np.int64)
    lut = np.zeros(aal_ids.max() + 1, dtype=np.uint8)
    for index, cls in group_aal(read_aal_names(folder / "aal.nii.txt")).items():
        lut[index] = cls
    labels = lut[aal_ids]
    value_range = (float(image.min()), float(image.max()))
    if crop == "none":
        lo_idx, hi_idx, margin = np.zeros(3, int), np.array(image.shape) - 1, 0.0
    else:
        mask = np.asarray(t1.dataobj) > HEAD_THRESHOLD if crop == "head" else labels > 0
        where = np.argwhere(mask)
        lo_idx, hi_idx = where.min(0), where.max(0)
        margin = BRAIN_MARGIN_MM if crop == "brain" else 0.0
    lo, hi = augment.world_box(t1.affine, lo_idx, hi_idx)
    grid = augment.Grid.covering(lo - margin, hi + margin, spacing)
    check_grid(spacing, [grid.shape], [hi - lo + 2 * margin])  # before the smoothing, which grows with the spacing
    src_spacing = np.linalg.norm(t1.affine[:3, :3], axis=0)
    sigma = 0.5 * np.sqrt(np.maximum((spacing / src_spacing) ** 2 - 1.0, 0.0))  # anti-aliasing
    if np.any(sigma > 0):
        image = ndimage.gaussian_filter(image, sigma)
    return BrainTemplate(image, labels, t1.affine, grid, value_range)


def make_brain_case(template: BrainTemplate, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One deformed, intensity-varied (image float32, label uint8) pair on `template.grid`."""
    points = augment.sample_source_points(rng, template.grid, SPATIAL)
    image = augment.warp(template.image, template.affine, points, order=1, cval=template.value_range[0])
    label = augment.warp(template.labels, template.affine, points, order=0, cval=0).astype(np.uint8)
    image = augment.augment_intensity(rng, image, template.value_range, template.grid.spacing, INTENSITY)
    return image, label


def _cases(template: BrainTemplate, split: str, count: int, seed: int) -> Iterator[Case]:
    prefix = "brain" if split == "train" else "brain_test"
    for i in range(count):
        image, label = make_brain_case(template, augment.case_rng(seed, split, i))
        yield Case(f"{prefix}_{i:03d}", image, label, template.grid.affine)


def build_brain_dataset(raw_dir: Union[str, Path, None] = None, dataset_id: int = 501, name: str = "MambaHoMEBrain",
                        num_train: int = 8, num_test: int = 3, spacing: float = 1.5, seed: int = 0,
                        crop: str = "head", force: bool = False, cache: Optional[Path] = None) -> Path:
    """Write the brain dataset as nnU-Net raw data under `raw_dir` (default `$nnUNet_raw`); returns its folder."""
    folder = dataset_folder(resolve_raw_dir(raw_dir), dataset_id, name)
    template = load_brain_template(spacing, crop, cache)
    extra = {
        "name": name,
        "description": "MNI ch2 T1 template with AAL regions grouped into 8 classes; every case is a seeded "
                       "deformation + intensity variation of that single real head.",
        "reference": "mricron-data (Debian) " + sources.MRICRON_VERSION + ": ch2.nii.gz, aal.nii.gz "
                     "(Tzourio-Mazoyer et al., NeuroImage 2002)",
        "licence": "see /usr/share/doc/mricron-data/copyright of the Debian package",
        "mambahome": {"builder": "brain", "seed": seed, "spacing": spacing, "crop": crop,
                      "test_labels": "labelsTs", "aal_groups": {k: list(v) for k, v in AAL_GROUPS.items()}},
    }
    return write_dataset(folder, _cases(template, "train", num_train, seed), _cases(template, "test", num_test, seed),
                         num_train, num_test, channel_names={"0": "T1"}, labels=BRAIN_LABELS, extra=extra,
                         force=force)
