"""Metrics against hand-derived values, an independent brute-force implementation, and files on disk."""
from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.distance import cdist

from nnunetv2_mambahome.benchmark.accuracy import evaluate_case
from nnunetv2_mambahome.benchmark.accuracy_inputs import AccuracyInputError, LabelClass, read_segmentation
from nnunetv2_mambahome.metrics import dice, hd95, nsd

# (z, y, x) spacing in mm, all different so that a mix-up of axes changes the results.
SPACING = (2.5, 0.8, 1.2)


def cube(shape=(8, 8, 8), start=(1, 1, 1), size=4):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


# Two 4x4x4 cubes A and B, B shifted by one voxel along axis a (spacing s_a).
# Boundary (face-connected erosion) of a 4-cube = 64 - 2**3 interior = 56 voxels. Directed A -> B:
#   * 16 voxels on A's face that B no longer covers: nearest B boundary voxel is one step along a -> s_a.
#   * 4 voxels on A's opposite face, not on its rim: they lie inside B's interior; nearest B boundary is
#     one step away along any axis (B's rim or B's far face) -> min(spacing).
#   * the other 36 boundary voxels are also B boundary voxels (B's side faces) -> 0.
# Sorted: 36 x 0, 4 x min(spacing), 16 x s_a. np.percentile(95) sits at index 0.95 * 55 = 52.25 -> s_a.
# B -> A is the mirror image, so HD95 = s_a. Overlap 4*4*3 = 48 voxels -> Dice = 96 / 128 = 0.75.
# NSD = (within tolerance A->B + B->A) / 112: tol < 0.8 -> 72/112; 0.8 <= tol < s_a -> 80/112; tol >= s_a -> 1.
@pytest.mark.parametrize("axis, expected_hd95", [(0, 2.5), (1, 0.8), (2, 1.2)])
def test_shifted_cubes_anisotropic(axis, expected_hd95):
    start_b = [1, 1, 1]
    start_b[axis] += 1
    a, b = cube(), cube(start=tuple(start_b))
    assert dice(a, b) == 0.75
    assert hd95(a, b, SPACING) == pytest.approx(expected_hd95)
    assert hd95(b, a, SPACING) == pytest.approx(expected_hd95)


def test_nsd_tolerance_below_between_and_at_offset():
    a, b = cube(), cube(start=(2, 1, 1))  # shifted along z: offsets 0, 0.8 (min spacing), 2.5 (s_z)
    assert nsd(a, b, SPACING, tolerance_mm=0.5) == pytest.approx(72 / 112)
    assert nsd(a, b, SPACING, tolerance_mm=1.0) == pytest.approx(80 / 112)
    assert nsd(a, b, SPACING, tolerance_mm=2.4) == pytest.approx(80 / 112)
    assert nsd(a, b, SPACING, tolerance_mm=2.5) == 1.0  # tolerance is inclusive


def test_single_voxels():
    pred, ref = np.zeros((8, 8, 10), bool), np.zeros((8, 8, 10), bool)
    pred[2, 3, 4] = True
    ref[5, 3, 8] = True
    # spacing (2, 1, 0.5): offset (3, 0, 4) voxels = (6, 0, 2) mm -> sqrt(36 + 4) = sqrt(40) ~ 6.32 mm
    spacing = (2.0, 1.0, 0.5)
    assert dice(pred, ref) == 0.0
    assert hd95(pred, ref, spacing) == pytest.approx(math.sqrt(40))
    assert nsd(pred, ref, spacing, tolerance_mm=6.3) == 0.0
    assert nsd(pred, ref, spacing, tolerance_mm=6.4) == 1.0
    assert dice(pred, pred) == 1.0 and hd95(pred, pred, spacing) == 0.0 and nsd(pred, pred, spacing, 0.0) == 1.0


def test_empty_prediction_and_empty_reference():
    empty, full = np.zeros((6, 6, 6), bool), cube(shape=(6, 6, 6))
    for pred, ref in ((empty, full), (full, empty)):
        assert dice(pred, ref) == 0.0
        assert hd95(pred, ref, SPACING) == math.inf
        assert nsd(pred, ref, SPACING, 2.0) == 0.0


def test_both_empty():
    empty = np.zeros((6, 6, 6), bool)
    assert dice(empty, empty) == 1.0
    assert hd95(empty, empty, SPACING) == 0.0
    assert nsd(empty, empty, SPACING, 2.0) == 1.0


@pytest.mark.parametrize(
    "pred, ref, spacing, error",
    [
        (np.zeros((4, 4, 4), bool), np.zeros((4, 4, 5), bool), SPACING, "shapes differ"),
        (np.zeros((4, 4), bool), np.zeros((4, 4), bool), SPACING, "3D"),
        (np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool), (1.0, 1.0), "3 values"),
        (np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool), (1.0, 0.0, 1.0), "> 0"),
        (np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool), (1.0, math.nan, 1.0), "> 0"),
    ],
)
def test_invalid_inputs(pred, ref, spacing, error):
    with pytest.raises(ValueError, match=error):
        hd95(pred, ref, spacing)


def test_non_boolean_masks_are_rejected():
    labels = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(TypeError, match="boolean"):
        dice(labels, labels)


def _brute_force(pred, ref, spacing, tolerance):
    """Independent implementation: explicit 6-neighbour boundaries and all-pairs distances."""

    def edge_points(mask):
        padded = np.pad(mask, 1)  # outside the array is background
        inner = padded[1:-1, 1:-1, 1:-1]
        neighbours_all_inside = np.ones_like(inner)
        for axis in range(3):
            for step in (-1, 1):
                neighbours_all_inside &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(inner & ~neighbours_all_inside) * np.asarray(spacing)

    p, r = edge_points(pred), edge_points(ref)
    d = cdist(p, r)
    p_to_r, r_to_p = d.min(axis=1), d.min(axis=0)
    hd = max(np.percentile(p_to_r, 95), np.percentile(r_to_p, 95))
    surface_dice = ((p_to_r <= tolerance).sum() + (r_to_p <= tolerance).sum()) / (len(p) + len(r))
    return hd, surface_dice


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_on_random_blobs(seed):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    shape, spacing = (9, 11, 13), tuple(rng.uniform(0.5, 3.0, size=3))
    # Smoothed noise thresholded at 0: irregular blobs filling about half the array, touching its border.
    pred, ref = (gaussian_filter(rng.standard_normal(shape), sigma=1.5) > 0 for _ in range(2))
    assert 0.1 < pred.mean() < 0.9 and 0.1 < ref.mean() < 0.9
    expected_hd, expected_nsd = _brute_force(pred, ref, spacing, tolerance=1.5)
    assert hd95(pred, ref, spacing) == pytest.approx(expected_hd)
    assert nsd(pred, ref, spacing, 1.5) == pytest.approx(expected_nsd)
    assert dice(pred, ref) == pytest.approx(2 * (pred & ref).sum() / (pred.sum() + ref.sum()))


def _write_nifti(path, array_zyx, spacing_xyz):
    image = sitk.GetImageFromArray(array_zyx.astype(np.uint8))
    image.SetSpacing(spacing_xyz)
    sitk.WriteImage(image, str(path))


def test_spacing_order_when_reading_files(tmp_path):
    # Array (z, y, x) = (6, 7, 8) with SimpleITK spacing (x, y, z) = (0.5, 0.8, 3.0).
    array = np.zeros((6, 7, 8), np.uint8)
    array[1:3, 2:5, 3:7] = 1
    _write_nifti(tmp_path / "ref.nii.gz", array, (0.5, 0.8, 3.0))

    # nibabel, an independent reader, sees (x, y, z) axes: confirms what was written.
    nii = nib.load(tmp_path / "ref.nii.gz")
    assert nii.shape == (8, 7, 6)
    assert nii.header.get_zooms() == pytest.approx((0.5, 0.8, 3.0))

    read, spacing = read_segmentation(tmp_path / "ref.nii.gz")
    assert read.shape == (6, 7, 8)
    assert spacing == pytest.approx((3.0, 0.8, 0.5))
    np.testing.assert_array_equal(read, array)


def test_file_evaluation_uses_spacing_along_the_right_axes(tmp_path):
    # A one-voxel-thick sheet (every voxel is boundary) and the same sheet 2 slices further along z:
    # every distance is 2 * s_z = 6 mm; with a z/x mix-up it would be 2 * 0.5 = 1 mm.
    ref = np.zeros((8, 6, 6), np.uint8)
    pred = np.zeros_like(ref)
    ref[2, 1:5, 1:5] = 1
    pred[4, 1:5, 1:5] = 1
    _write_nifti(tmp_path / "ref.nii.gz", ref, (0.5, 0.8, 3.0))
    _write_nifti(tmp_path / "pred.nii.gz", pred, (0.5, 0.8, 3.0))
    [(d, hd, surface_dice)] = evaluate_case(
        tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", [LabelClass("sheet", (1,))], 5.9
    )
    assert d == 0.0
    assert hd == pytest.approx(6.0)
    assert surface_dice == 0.0


def test_negative_tolerance_is_rejected():
    with pytest.raises(ValueError, match="tolerance_mm"):
        nsd(cube(), cube(), SPACING, tolerance_mm=-1.0)


def test_file_evaluation_rejects_mismatched_spacing(tmp_path):
    array = np.ones((3, 4, 5), np.uint8)
    _write_nifti(tmp_path / "ref.nii.gz", array, (0.5, 0.8, 3.0))
    _write_nifti(tmp_path / "pred.nii.gz", array, (3.0, 0.8, 0.5))
    with pytest.raises(AccuracyInputError, match="spacing"):
        evaluate_case(tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", [LabelClass("x", (1,))], 2.0)


def test_nnunet_empty_convention_scores_nan_only_when_both_are_empty():
    empty, full = np.zeros((6, 6, 6), bool), cube(shape=(6, 6, 6))
    assert math.isnan(dice(empty, empty, empty="nnunet"))
    assert math.isnan(hd95(empty, empty, SPACING, empty="nnunet"))
    assert math.isnan(nsd(empty, empty, SPACING, 2.0, empty="nnunet"))
    assert dice(empty, full, empty="nnunet") == 0.0 and hd95(full, empty, SPACING, empty="nnunet") == math.inf
    assert dice(full, full, empty="nnunet") == 1.0
    with pytest.raises(ValueError, match="empty-mask convention"):
        dice(full, full, empty="monai")


def test_nnunet_convention_matches_nnunet_compute_metrics(tmp_path):
    """nnU-Net's own evaluation of label files (Dice per class, nan when both empty) against ours."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    ref = np.zeros((8, 10, 12), np.uint8)
    ref[1:6, 2:8, 3:9] = 1
    pred = np.roll(ref, 2, axis=2)
    pred[7, 0, 0] = 3  # class 3: a false positive; class 2: absent from both
    _write_nifti(tmp_path / "ref.nii.gz", ref, (0.7, 0.7, 3.0))
    _write_nifti(tmp_path / "pred.nii.gz", pred, (0.7, 0.7, 3.0))
    theirs = compute_metrics(str(tmp_path / "ref.nii.gz"), str(tmp_path / "pred.nii.gz"), SimpleITKIO(), [1, 2, 3])
    classes = [LabelClass(str(v), (v,)) for v in (1, 2, 3)]
    ours = evaluate_case(tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", classes, 2.0, empty="nnunet")
    for value, (our_dice, _, _) in zip((1, 2, 3), ours):
        np.testing.assert_equal(our_dice, theirs["metrics"][value]["Dice"])
    assert math.isnan(ours[1][0]) and ours[2][0] == 0.0


def _anisotropic_cases():
    """(pred, ref, spacing) with spacing ratios up to 10: blobs touching the border, shifted boxes, a thin slab."""
    from scipy.ndimage import gaussian_filter

    cases = []
    for seed, spacing in enumerate([(3.0, 0.7, 0.7), (5.0, 1.0, 0.5), (0.6, 2.5, 1.1)]):
        rng = np.random.default_rng(100 + seed)
        pred, ref = (gaussian_filter(rng.standard_normal((10, 14, 12)), sigma=(1.0, 2.0, 1.5)) > 0.1 for _ in range(2))
        cases.append((pred, ref, spacing))
    box = np.zeros((12, 16, 16), bool)
    box[3:8, 4:12, 2:10] = True
    cases.append((np.roll(box, (1, 2), axis=(0, 2)), box, (4.0, 0.8, 0.8)))
    slab = np.zeros((12, 16, 16), bool)
    slab[5:7, 2:14, 2:14] = True
    cases.append((slab, box, (2.0, 0.5, 1.0)))
    return cases


MONAI_DEPRECATION = "ignore:.*always_return_as_numpy.*:FutureWarning"  # raised inside MONAI 1.5+, not by us


@pytest.mark.filterwarnings(MONAI_DEPRECATION)
@pytest.mark.parametrize("case", range(5))
def test_hd95_and_nsd_match_monai_on_anisotropic_cases(case):
    """MONAI (the test extra) as an independent implementation of the same HD95 / voxel NSD."""
    import monai.metrics as monai_metrics
    import torch

    pred, ref, spacing = _anisotropic_cases()[case]
    assert pred.any() and ref.any()

    def one_hot(mask):
        return torch.from_numpy(mask[None, None].astype(np.float32))

    for tolerance in (1.0, 2.5):
        expected_nsd = monai_metrics.compute_surface_dice(one_hot(pred), one_hot(ref), [tolerance],
                                                          include_background=True, spacing=list(spacing)).item()
        assert nsd(pred, ref, spacing, tolerance) == pytest.approx(expected_nsd, rel=1e-6)
    expected_hd = monai_metrics.compute_hausdorff_distance(one_hot(pred), one_hot(ref), include_background=True,
                                                           percentile=95, spacing=list(spacing)).item()
    assert hd95(pred, ref, spacing) == pytest.approx(expected_hd, rel=1e-6)
    assert hd95(pred, ref, spacing) > 0


@pytest.mark.filterwarnings(MONAI_DEPRECATION)
def test_nsd_of_two_empty_masks_is_monai_nan_under_nnunet_convention():
    import monai.metrics as monai_metrics
    import torch

    empty = np.zeros((6, 6, 6), bool)
    t = torch.from_numpy(empty[None, None].astype(np.float32))
    with pytest.warns(UserWarning):
        expected = monai_metrics.compute_surface_dice(t, t, [1.0], include_background=True, spacing=list(SPACING))
    assert math.isnan(expected.item()) and math.isnan(nsd(empty, empty, SPACING, 1.0, empty="nnunet"))
