"""`benchmark accuracy`: per-case, per-class Dice / HD95 / NSD of named prediction sets, with a paired test.

Sets are nnU-Net model folders (`--results NAME=PATH`, their cross-validation predictions in
`fold_<k>/validation`) or plain prediction folders (`--pred NAME=DIR --labels DIR`, e.g. held-out test
predictions). Classes and their names come from dataset.json; spacing comes from each reference file, and every
prediction must lie on its reference's grid (shape, spacing, origin and direction, with the tolerances of
`accuracy_inputs`). Prints a progress bar (stderr) while it evaluates.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunetv2_mambahome.benchmark.accuracy_inputs import (
    AccuracyInputError,
    LabelClass,
    SPACING_RTOL,
    PredictionSet,
    check_same_grid,
    find_dataset_json,
    load_dataset_json,
    prediction_set,
    read_segmentation,
    results_set,
)
from nnunetv2_mambahome.benchmark.accuracy_report import write_accuracy_report
from nnunetv2_mambahome.benchmark.accuracy_stats import CaseResult
from nnunetv2_mambahome.metrics import DEFAULT_EMPTY, EMPTY_CONVENTIONS, dice, surface_metrics
from nnunetv2_mambahome.progress import progress
from nnunetv2_mambahome.settings import EXIT_BAD_INPUT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `nnunetv2-mambahome benchmark accuracy`."""
    parser.add_argument(
        "--results", metavar="NAME=PATH", action=_NamedSetAction, dest="sets", const="results",
        help="nnU-Net model folder <Dataset>/<Trainer>__<Plans>__<cfg>; uses fold_<k>/validation (repeatable)",
    )
    parser.add_argument(
        "--pred", metavar="NAME=DIR", action=_NamedSetAction, dest="sets", const="pred",
        help="folder of predictions <case><file_ending>, needs --labels (repeatable)",
    )
    parser.add_argument(
        "--labels", type=Path, metavar="DIR",
        help="reference segmentations (default for --results: $nnUNet_raw/<Dataset>/labelsTr)",
    )
    parser.add_argument(
        "--dataset-json", type=Path, metavar="FILE",
        help="dataset.json with the labels (default: the one in the results folders, else next to --labels)",
    )
    parser.add_argument(
        "--folds", nargs="+", metavar="K", help="folds of --results sets (default: all numbered folds found)"
    )
    parser.add_argument(
        "--compare", nargs=2, metavar=("A", "B"), help="sets for the paired test (default: the first two given)"
    )
    parser.add_argument(
        "--nsd-tolerance", type=float, default=2.0, metavar="MM", help="NSD tolerance in mm (default 2.0)"
    )
    parser.add_argument(
        "--empty-masks", choices=sorted(EMPTY_CONVENTIONS), default=DEFAULT_EMPTY,
        help="a class absent from both prediction and reference: 'perfect' scores Dice 1, HD95 0, NSD 1 (default); "
             "'nnunet' scores nan and leaves it out of the means, as nnU-Net's summary.json does",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("mambahome_accuracy_report"), metavar="DIR",
        help="report folder (default ./mambahome_accuracy_report)",
    )
    parser.add_argument(
        "-np", "--num-processes", type=int, default=2, metavar="N", help="worker processes (default 2)"
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate every set, write the report to --out; 0 on success, 2 on input errors."""
    try:
        sets, classes, dataset_json = _collect_inputs(args)
        compare = _compare_pair(args.compare, [s.name for s in sets])
        print(f"evaluating {sum(len(s.cases) for s in sets)} predictions x {len(classes)} classes "
              f"with {args.num_processes} process(es)")
        results = evaluate(sets, classes, args.nsd_tolerance, args.num_processes, args.empty_masks)
    except AccuracyInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report = write_accuracy_report(args.out, sets, classes, results, compare, args.nsd_tolerance, dataset_json,
                                   args.empty_masks)
    print(f"wrote {report}")
    return 0


def evaluate(
    sets: Sequence[PredictionSet], classes: Sequence[LabelClass], tolerance_mm: float, num_processes: int,
    empty: str = DEFAULT_EMPTY,
) -> list[CaseResult]:
    """Metrics of every class in every case of every set, in input order; a progress bar on stderr."""
    jobs = [(s, pair) for s in sets for pair in s.cases]
    args = [(pair.pred, pair.ref, classes, tolerance_mm, empty) for _, pair in jobs]
    if num_processes > 1:
        # spawn: SimpleITK/ITK may hold threads, which fork does not copy safely.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=num_processes, mp_context=context) as pool:
            per_case = list(progress(pool.map(evaluate_case, *zip(*args)), "evaluating", len(args), "case"))
    else:
        per_case = [evaluate_case(*a) for a in progress(args, "evaluating", len(args), "case")]
    return [
        CaseResult(s.name, pair.fold, pair.case, c.label, c.name, *values)
        for (s, pair), metrics in zip(jobs, per_case)
        for c, values in zip(classes, metrics)
    ]


def evaluate_case(
    pred_path: Path, ref_path: Path, classes: Sequence[LabelClass], tolerance_mm: float, empty: str = DEFAULT_EMPTY
) -> list[tuple[float, float, float]]:
    """(dice, hd95, nsd) per class for one prediction file, in mm of the reference's spacing; `empty` is the
    both-empty convention of `nnunetv2_mambahome.metrics`."""
    pred, pred_spacing = read_segmentation(pred_path)
    ref, spacing = read_segmentation(ref_path)
    if pred.shape != ref.shape:
        raise AccuracyInputError(f"{pred_path} has shape {pred.shape} but its reference {ref_path} has {ref.shape}")
    if not np.allclose(pred_spacing, spacing, rtol=SPACING_RTOL, atol=0):
        raise AccuracyInputError(
            f"{pred_path} has spacing {pred_spacing} (z, y, x) but its reference {ref_path} has {spacing}"
        )
    check_same_grid(pred_path, ref_path)
    out = []
    for c in classes:
        p, r = np.isin(pred, c.values), np.isin(ref, c.values)
        out.append((dice(p, r, empty), *surface_metrics(p, r, spacing, tolerance_mm, empty)))
    return out


def _collect_inputs(args: argparse.Namespace) -> tuple[list[PredictionSet], list[LabelClass], Path]:
    named = args.sets or []
    if not named:
        raise AccuracyInputError("give at least one --results NAME=PATH or --pred NAME=DIR")
    names = [name for _, name, _ in named]
    if len(set(names)) != len(names):
        raise AccuracyInputError(f"set names must be unique, got {names}")
    if args.labels is None and any(kind == "pred" for kind, _, _ in named):
        raise AccuracyInputError("--pred needs --labels DIR (the reference segmentations)")
    if not args.nsd_tolerance >= 0:
        raise AccuracyInputError(f"--nsd-tolerance must be >= 0 mm, got {args.nsd_tolerance}")
    if args.num_processes < 1:
        raise AccuracyInputError(f"-np must be >= 1, got {args.num_processes}")
    results_dirs = [path for kind, _, path in named if kind == "results"]
    dataset_json = find_dataset_json(args.dataset_json, results_dirs, args.labels)
    classes, file_ending = load_dataset_json(dataset_json)
    sets = [
        results_set(name, path, args.folds, args.labels, file_ending)
        if kind == "results"
        else prediction_set(name, path, args.labels, file_ending)
        for kind, name, path in named
    ]
    for s in sets:
        _check_unique_cases(s)
    return sets, classes, dataset_json


def _check_unique_cases(s: PredictionSet) -> None:
    seen: dict[str, str] = {}
    for pair in s.cases:
        if pair.case in seen:
            raise AccuracyInputError(
                f"set {s.name}: case {pair.case} is predicted in fold {seen[pair.case]} and fold {pair.fold}; "
                "choose non-overlapping folds with --folds"
            )
        seen[pair.case] = pair.fold


def _compare_pair(compare: Sequence[str] | None, names: Sequence[str]) -> tuple[str, str] | None:
    if compare is None:
        return (names[0], names[1]) if len(names) >= 2 else None
    unknown = [c for c in compare if c not in names]
    if unknown:
        raise AccuracyInputError(f"--compare: unknown set(s) {unknown}; sets are {list(names)}")
    if compare[0] == compare[1]:
        raise AccuracyInputError("--compare needs two different sets")
    return compare[0], compare[1]


class _NamedSetAction(argparse.Action):
    """Collects NAME=PATH values of --results and --pred into one list, in command-line order."""

    def __call__(self, parser, namespace, value, option_string=None):
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            parser.error(f"{option_string} expects NAME=PATH, got {value!r}")
        items = list(getattr(namespace, self.dest) or [])
        items.append((self.const, name, Path(path)))
        setattr(namespace, self.dest, items)
