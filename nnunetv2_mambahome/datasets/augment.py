"""Seeded, realistic variation of a single real scan: spatial deformation plus intensity changes.

The datasets turn one or two real scans into many cases. Each case samples, from its own seed,
an affine transform (rotation, scaling, shift) plus a smooth elastic field (random displacements
on a coarse control grid, upsampled with cubic splines), and resamples the source through it in a
single interpolation: output grid -> source world coordinates -> source voxels. Intensities then
get a gamma change, a smooth multiplicative bias field, gain/offset and Gaussian noise.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

SPLITS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class Grid:
    """An axis-aligned output grid in world (scanner, mm) coordinates."""

    shape: tuple[int, int, int]
    spacing: float
    origin: tuple[float, float, float]  # world position of voxel (0, 0, 0)

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag([self.spacing] * 3 + [1.0])
        aff[:3, 3] = self.origin
        return aff

    @classmethod
    def covering(cls, lo: np.ndarray, hi: np.ndarray, spacing: float) -> "Grid":
        """The grid of `spacing` centred on the world box [lo, hi] and covering it."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        shape = np.floor((hi - lo) / spacing).astype(int) + 1
        origin = (lo + hi) / 2 - (shape - 1) / 2 * spacing
        return cls(tuple(int(s) for s in shape), float(spacing), tuple(float(o) for o in origin))


def world_box(affine: np.ndarray, lo_index: Sequence[int], hi_index: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """World-coordinate bounding box of the voxel-index box [lo_index, hi_index] of a volume."""
    corners = np.array(list(itertools.product(*zip(lo_index, hi_index))), dtype=float)
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return world.min(0), world.max(0)


@dataclass(frozen=True)
class SpatialParams:
    """Ranges of the random spatial transform (per world axis x, y, z where given as triples)."""

    max_rotation_deg: tuple[float, float, float] = (10.0, 10.0, 10.0)
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_shift_mm: tuple[float, float, float] = (8.0, 8.0, 8.0)
    elastic_std_mm: float = 3.0
    elastic_control_spacing_mm: float = 40.0


@dataclass(frozen=True)
class IntensityParams:
    """Ranges of the random intensity changes, on intensities scaled to [0, 1] by the source range."""

    gamma_range: tuple[float, float] = (0.7, 1.5)
    bias_log_std: float = 0.15
    bias_control_spacing_mm: float = 80.0
    gain_range: tuple[float, float] = (0.9, 1.1)
    max_offset: float = 0.05
    noise_std_range: tuple[float, float] = (0.005, 0.03)


def case_rng(base_seed: int, split: str, index: int) -> np.random.Generator:
    """Generator of case `index` of `split`; train and test streams differ by construction."""
    return np.random.default_rng(np.random.SeedSequence([int(base_seed), SPLITS[split], int(index)]))


def _spline_weights(n_control: int, n_out: int) -> np.ndarray:
    """(n_out, n_control) matrix evaluating the cubic-spline interpolant of control values on n_out points."""
    x = np.linspace(0.0, n_control - 1.0, n_out)
    eye = np.eye(n_control)
    return np.stack([ndimage.map_coordinates(eye[j], [x], order=3, mode="nearest") for j in range(n_control)], 1)


def smooth_random_field(rng: np.random.Generator, shape: Sequence[int], spacing: float,
                        control_spacing_mm: float, std: float) -> np.ndarray:
    """Smooth Gaussian random field on `shape`: N(0, std) values on a coarse control grid, spline-upsampled.

    Spline interpolation is separable and linear, so upsampling is three small matrix products
    (fast) instead of a per-voxel 3-D interpolation.
    """
    n_ctrl = [max(4, int(np.ceil(s * spacing / control_spacing_mm)) + 1) for s in shape]
    coarse = rng.normal(0.0, std, size=n_ctrl)
    wx, wy, wz = (_spline_weights(c, s) for c, s in zip(n_ctrl, shape))
    return np.einsum("ia,jb,kc,abc->ijk", wx, wy, wz, coarse, optimize=True)


def _rotation(angles_rad: Sequence[float]) -> np.ndarray:
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def sample_source_points(rng: np.random.Generator, grid: Grid, params: SpatialParams) -> np.ndarray:
    """World coordinates (3, *grid.shape) in the source that each output voxel samples from."""
    idx = np.indices(grid.shape, dtype=np.float64)
    pts = idx * grid.spacing + np.asarray(grid.origin)[:, None, None, None]
    centre = np.asarray(grid.origin) + (np.asarray(grid.shape) - 1) / 2 * grid.spacing
    angles = np.deg2rad([rng.uniform(-m, m) for m in params.max_rotation_deg])
    scale = rng.uniform(*params.scale_range, size=3)
    shift = np.array([rng.uniform(-m, m) for m in params.max_shift_mm])
    matrix = _rotation(angles) @ np.diag(scale)
    rel = pts - centre[:, None, None, None]
    out = np.einsum("ij,j...->i...", matrix, rel) + (centre + shift)[:, None, None, None]
    for axis in range(3):
        out[axis] += smooth_random_field(rng, grid.shape, grid.spacing, params.elastic_control_spacing_mm,
                                         params.elastic_std_mm)
    return out


def warp(volume: np.ndarray, affine: np.ndarray, world_points: np.ndarray, order: int, cval: float) -> np.ndarray:
    """Sample `volume` (voxel->world `affine`) at `world_points`; order 1 for images, 0 for labels."""
    inv = np.linalg.inv(affine)
    vox = np.einsum("ij,j...->i...", inv[:3, :3], world_points) + inv[:3, 3][:, None, None, None]
    return ndimage.map_coordinates(volume, vox, order=order, mode="constant", cval=cval, prefilter=False)


def augment_intensity(rng: np.random.Generator, image: np.ndarray, value_range: tuple[float, float],
                      spacing: float, params: IntensityParams) -> np.ndarray:
    """Gamma, smooth multiplicative bias, gain/offset and noise; returns float32 in the source's units."""
    lo, hi = value_range
    x = np.clip((image.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
    x = x ** rng.uniform(*params.gamma_range)
    x *= np.exp(smooth_random_field(rng, image.shape, spacing, params.bias_control_spacing_mm, params.bias_log_std))
    x = rng.uniform(*params.gain_range) * x + rng.uniform(-params.max_offset, params.max_offset)
    x += rng.normal(0.0, rng.uniform(*params.noise_std_range), size=x.shape)
    return (lo + x * (hi - lo)).astype(np.float32)
