"""Helpers for the bad-input tests: a tiny preprocessed dataset, trainers built on it, and folder snapshots."""
from __future__ import annotations

import json
from pathlib import Path

from plans_shapes import plain_arch, plans

DATASET = "Dataset997_BadInput"
PATCH = [16, 16, 16]
# 3 stages (total stride 4): Mamba-HoME blocks on stages 1 and 2
ARCH = plain_arch([4, 8, 16], [[3, 3, 3]] * 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]])
DATASET_JSON = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1}, "numTraining": 2,
                "file_ending": ".nii.gz"}


def write_preprocessed(root: Path) -> Path:
    """root/<DATASET> with nnUNetPlans.json and dataset.json (no data: benchmarks and trainers need none)."""
    folder = root / DATASET
    folder.mkdir(parents=True)
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans(PATCH, ARCH)))
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON))
    return folder


def build(trainer: str, preprocessed: Path, results: Path):
    """An initialised trainer on the tiny dataset, on the CPU, as `benchmark speed` builds it."""
    from nnunetv2_mambahome.benchmark.speed_setup import Setup, Workload, build_trainer

    workload = Workload(str(preprocessed / DATASET), "3d_fullres", "cpu", tuple(PATCH), 1)
    return build_trainer(Setup(trainer, "nnUNetPlans"), workload, results)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes: equal snapshots mean nothing was written, moved or lost."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
