"""Segmentation accuracy metrics on boolean 3D masks: Dice, HD95 and normalized surface Dice.

Surface conventions follow MONAI (`compute_hausdorff_distance`, `compute_surface_dice`): the boundary of
a mask is the mask minus its binary erosion with scipy's default *face-connected* (6-neighbourhood)
structuring element, voxels outside the array count as background, and distances are Euclidean in mm,
from a Euclidean distance transform with `sampling=spacing`.

Empty masks (decided here once, used by every caller). A class absent from both masks scores by one of two
conventions, `EMPTY_CONVENTIONS`:

============================  ===================  ====================  =====================
case                          dice                 hd95                  nsd
============================  ===================  ====================  =====================
both empty, "perfect"         1.0                  0.0                   1.0
both empty, "nnunet"          nan                  nan                   nan
exactly one empty             0.0                  inf                   0.0
============================  ===================  ====================  =====================

"perfect" (the default) counts a correctly absent class as perfect agreement. "nnunet" is nnU-Net's
(`compute_metrics` in nnunetv2.evaluation: Dice NaN when prediction and reference are both empty, left out of
means by `np.nanmean`), so that numbers compare with its `summary.json`; MONAI's NSD is NaN there too.

`inf` is deliberate (MONAI returns nan here): a missed or hallucinated structure has no finite surface
distance, and aggregation code must report such cases separately instead of averaging them.

Because the outside of the array is background, a mask in a volume one voxel thick along some axis (a 2D
image stored as 3D) is all boundary; these metrics are meant for 3D volumes.

Arrays are indexed (z, y, x) as returned by `SimpleITK.GetArrayFromImage`; `spacing` must be in the same
order, i.e. the *reverse* of `SimpleITK.Image.GetSpacing()`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

# Face connectivity, scipy's default for binary_erosion and what MONAI uses.
_STRUCTURE = generate_binary_structure(3, 1)

# convention -> (dice, hd95, nsd) of a class absent from both masks
EMPTY_CONVENTIONS: dict[str, tuple[float, float, float]] = {
    "perfect": (1.0, 0.0, 1.0),
    "nnunet": (float("nan"), float("nan"), float("nan")),
}
DEFAULT_EMPTY = "perfect"


def dice(pred: np.ndarray, ref: np.ndarray, empty: str = DEFAULT_EMPTY) -> float:
    """Dice overlap 2|P∩R| / (|P|+|R|); when both masks are empty 1.0 ("perfect") or nan ("nnunet")."""
    pred, ref = _check_masks(pred, ref)
    both_empty = _both_empty_scores(empty)
    denominator = int(pred.sum()) + int(ref.sum())
    if denominator == 0:
        return both_empty[0]
    return 2.0 * int(np.logical_and(pred, ref).sum()) / denominator


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], empty: str = DEFAULT_EMPTY) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm between the boundaries of two masks.

    The larger of the two directed 95th percentiles (numpy's linear interpolation) of the distances from
    each boundary voxel of one mask to the nearest boundary voxel of the other. inf when exactly one mask is
    empty; both empty: see `EMPTY_CONVENTIONS`.
    """
    return surface_metrics(pred, ref, spacing, tolerance_mm=0.0, empty=empty)[0]


def nsd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float,
        empty: str = DEFAULT_EMPTY) -> float:
    """Normalized surface Dice at `tolerance_mm`: the fraction of boundary voxels of both masks that lie
    within the tolerance (inclusive) of the other mask's boundary.

    This is the voxel-counting approximation (each boundary voxel weighs 1, as in MONAI's
    `compute_surface_dice`), not DeepMind's `surface-distance` version that weighs surface elements by
    their area; the two give different numbers, so do not mix them in one comparison. 0.0 when exactly one
    mask is empty; both empty: see `EMPTY_CONVENTIONS`.
    """
    return surface_metrics(pred, ref, spacing, tolerance_mm, empty=empty)[1]


def surface_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float, empty: str = DEFAULT_EMPTY
) -> tuple[float, float]:
    """(hd95, nsd) from one pass of distance transforms: half the cost of calling both functions."""
    pred, ref = _check_masks(pred, ref)
    spacing = _check_spacing(spacing)
    both_empty = _both_empty_scores(empty)
    if not (np.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm!r}")
    case = _empty_case(pred, ref)
    if case is not None:
        return both_empty[1:] if case else (float("inf"), 0.0)
    pred_to_ref, ref_to_pred = _directed_boundary_distances(pred, ref, spacing)
    hd = float(max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95)))
    within = int((pred_to_ref <= tolerance_mm).sum()) + int((ref_to_pred <= tolerance_mm).sum())
    return hd, within / (pred_to_ref.size + ref_to_pred.size)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean mask: the mask minus its face-connected erosion."""
    return mask & ~binary_erosion(mask, structure=_STRUCTURE, border_value=0)


def _directed_boundary_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from every boundary voxel of pred to ref's boundary, and of ref to pred's.

    Both masks must be non-empty. Work happens inside the bounding box of pred|ref: every boundary
    voxel lies inside it, and erosion treats the outside as background either way, so cropping is exact.
    """
    box = _bounding_box(pred | ref)
    pred_edge, ref_edge = boundary(pred[box]), boundary(ref[box])
    to_ref = distance_transform_edt(~ref_edge, sampling=spacing)
    to_pred = distance_transform_edt(~pred_edge, sampling=spacing)
    return to_ref[pred_edge], to_pred[ref_edge]


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        indices = np.flatnonzero(mask.any(axis=other_axes))
        box.append(slice(int(indices[0]), int(indices[-1]) + 1))
    return tuple(box)


def _empty_case(pred: np.ndarray, ref: np.ndarray) -> bool | None:
    """True if both masks are empty, False if exactly one is, None if neither."""
    pred_any, ref_any = bool(pred.any()), bool(ref.any())
    if pred_any and ref_any:
        return None
    return not pred_any and not ref_any


def _both_empty_scores(empty: str) -> tuple[float, float, float]:
    if empty not in EMPTY_CONVENTIONS:
        raise ValueError(f"unknown empty-mask convention {empty!r}; use one of {sorted(EMPTY_CONVENTIONS)}")
    return EMPTY_CONVENTIONS[empty]


def _check_masks(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    for name, mask in (("pred", pred), ("ref", ref)):
        if mask.ndim != 3:
            raise ValueError(f"{name} must be a 3D array, got shape {mask.shape}")
        if mask.dtype != bool:
            raise TypeError(f"{name} must be a boolean mask, got dtype {mask.dtype}; compare labels first (seg == 1)")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref shapes differ: {pred.shape} vs {ref.shape}")
    return pred, ref


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3:
        raise ValueError(f"spacing must have 3 values (z, y, x in mm), got {len(values)}: {spacing!r}")
    if not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing values must be finite and > 0, got {spacing!r}")
    return values
