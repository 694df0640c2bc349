"""Writing the `benchmark accuracy` report: accuracy.md, per_case.csv and box plots of Dice and HD95."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

from nnunetv2_mambahome import __version__
from nnunetv2_mambahome.benchmark.accuracy_inputs import (
    DIRECTION_TOLERANCE,
    ORIGIN_TOLERANCE_VOXELS,
    SPACING_RTOL,
    LabelClass,
    PredictionSet,
)
from nnunetv2_mambahome.benchmark.accuracy_stats import (
    METRICS,
    CaseResult,
    PairedTest,
    Summary,
    paired_wilcoxon,
    per_case_means,
    summarize,
)
from nnunetv2_mambahome.benchmark.report import grouped_box_plot, markdown_table, write_csv
from nnunetv2_mambahome.metrics import DEFAULT_EMPTY

CSV_HEADERS = ("set", "fold", "case", "label", "class", "dice", "hd95", "nsd")
TEST_CSV_HEADERS = ("set_a", "set_b", "metric", "n", "n_excluded", "mean_a", "mean_b", "statistic", "pvalue", "note")
_DIGITS = {"dice": 3, "hd95": 2, "nsd": 3}
# --empty-masks convention -> what the report's conventions section says about it
_EMPTY_TEXT = {
    "perfect": "Class absent from both prediction and reference (`--empty-masks perfect`, the default): Dice 1, "
               "HD95 0 mm, NSD 1, counted in the means.",
    "nnunet": "Class absent from both prediction and reference (`--empty-masks nnunet`, nnU-Net's convention): "
              "Dice, HD95 and NSD nan, left out of every mean (nanmean), as in nnU-Net's summary.json.",
}


def write_accuracy_report(
    out_dir: Path,
    sets: Sequence[PredictionSet],
    classes: Sequence[LabelClass],
    results: Sequence[CaseResult],
    compare: Optional[tuple[str, str]],
    tolerance_mm: float,
    dataset_json: Path,
    empty: str = DEFAULT_EMPTY,
) -> Path:
    """Write accuracy.md, per_case.csv, paired_test.csv (if compare), dice_boxplot.png and hd95_boxplot.png
    to out_dir; return the path of accuracy.md. `empty` names the both-empty convention the results used."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(
        out_dir / "per_case.csv",
        CSV_HEADERS,
        [(r.set, r.fold, r.case, r.label, r.name, r.dice, r.hd95, r.nsd) for r in results],
    )
    names = [s.name for s in sets]
    for metric, ylabel in (("dice", "Dice"), ("hd95", "HD95 (mm)")):
        groups = {
            _class_title(c): {
                s: [getattr(r, metric) for r in results if r.set == s and r.label == c.label] for s in names
            }
            for c in classes
        }
        n_inf = sum(math.isinf(v) for per_set in groups.values() for vs in per_set.values() for v in vs)
        title = f"{ylabel} per class" + (f" ({n_inf} infinite value(s) not drawn)" if n_inf else "")
        grouped_box_plot(out_dir / f"{metric}_boxplot.png", groups, title, ylabel)

    tests = _paired_tests(results, compare) if compare else []
    if compare:
        write_csv(
            out_dir / "paired_test.csv",
            TEST_CSV_HEADERS,
            [(*compare, t.metric, t.n, t.n_excluded, t.mean_a, t.mean_b, t.statistic, t.pvalue, t.reason)
             for t in tests],
        )
    markdown = _markdown(sets, classes, results, compare, tests, tolerance_mm, dataset_json, empty)
    path = out_dir / "accuracy.md"
    path.write_text(markdown)
    return path


def _paired_tests(results: Sequence[CaseResult], compare: tuple[str, str]) -> list[PairedTest]:
    a, b = ([r for r in results if r.set == name] for name in compare)
    return [paired_wilcoxon(m, per_case_means(a, m), per_case_means(b, m)) for m in METRICS]


def _markdown(
    sets: Sequence[PredictionSet],
    classes: Sequence[LabelClass],
    results: Sequence[CaseResult],
    compare: Optional[tuple[str, str]],
    tests: Sequence[PairedTest],
    tolerance_mm: float,
    dataset_json: Path,
    empty: str,
) -> str:
    by_set = {s.name: [r for r in results if r.set == s.name] for s in sets}
    metric_titles = {"dice": "Dice", "hd95": "HD95 (mm)", "nsd": f"NSD at {tolerance_mm:g} mm"}
    parts = [
        "# Accuracy report\n",
        f"Written by `nnunetv2-mambahome benchmark accuracy` {__version__} on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Classes from `{dataset_json}`.\n",
        markdown_table(
            ["Set", "Source", "Folds", "Cases"],
            [(s.name, s.source, ", ".join(sorted({p.fold for p in s.cases if p.fold}, key=_fold_key)) or "-",
              len(s.cases)) for s in sets],
            align="llll",
        ),
    ]
    for metric, title in metric_titles.items():
        rows = [
            [_class_title(c)]
            + [_format(summarize(getattr(r, metric) for r in by_set[s] if r.label == c.label), metric) for s in by_set]
            for c in classes
        ]
        rows.append(
            ["**Mean over classes**"]
            + [_format(summarize(per_case_means(by_set[s], metric).values()), metric) for s in by_set]
        )
        parts += [f"## {title}, mean ± std over cases\n", markdown_table(["Class", *by_set], rows)]

    fold_rows = [
        [s.name, fold, len({r.case for r in fold_results})]
        + [_format(summarize(per_case_means(fold_results, m).values()), m) for m in metric_titles]
        for s in sets
        for fold in sorted({p.fold for p in s.cases if p.fold}, key=_fold_key)
        if (fold_results := [r for r in by_set[s.name] if r.fold == fold])
    ]
    if fold_rows:
        headers = ["Set", "Fold", "Cases", *metric_titles.values()]
        parts += ["## Per fold, mean over classes\n", markdown_table(headers, fold_rows)]

    parts.append(f"## Paired test{f': {compare[0]} vs {compare[1]}' if compare else ''}\n")
    if compare:
        parts += [
            "Two-sided Wilcoxon signed-rank test (`scipy.stats.wilcoxon`) on the per-case mean over classes, "
            "over the cases present in both sets (for HD95: where both values are finite).\n",
            markdown_table(
                ["Metric", "n", f"Mean {compare[0]}", f"Mean {compare[1]}", "W", "p", "Note"],
                [_test_row(t, metric_titles[t.metric]) for t in tests],
                align="lrrrrrl",
            ),
        ]
    else:
        parts.append("n/a: a paired test needs two sets.\n")
    parts += ["## Conventions\n", _CONVENTIONS.format(tolerance=tolerance_mm, empty=_EMPTY_TEXT[empty],
                                                    spacing_rtol=SPACING_RTOL, origin_voxels=ORIGIN_TOLERANCE_VOXELS,
                                                    direction=DIRECTION_TOLERANCE)]
    return "\n".join(parts)


def _test_row(t: PairedTest, title: str) -> list[str]:
    digits = _DIGITS[t.metric]
    excluded = f"{t.n_excluded} case(s) without a finite value left out" if t.n_excluded else ""
    note = "; ".join(filter(None, [t.reason, excluded]))
    means = ["-" if math.isnan(v) else f"{v:.{digits}f}" for v in (t.mean_a, t.mean_b)]
    if t.pvalue is None:
        return [title, str(t.n), *means, "n/a", "n/a", note]
    return [title, str(t.n), *means, f"{t.statistic:g}", f"{t.pvalue:.3g}", note]


def _format(s: Summary, metric: str) -> str:
    """'mean ± std', or 'mean' for one value; '(k inf)' counts infinite values left out of both."""
    digits = _DIGITS[metric]
    if s.n == 0:
        text = "inf" if s.n_inf else "n/a"
    elif s.n == 1:
        text = f"{s.mean:.{digits}f}"
    else:
        text = f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"
    return text + (f" ({s.n_inf} inf)" if s.n_inf and s.n else "")


def _class_title(c: LabelClass) -> str:
    return f"{c.name} ({c.label})"


def _fold_key(fold: str) -> tuple[int, str]:
    return (int(fold), "") if fold.isdigit() else (1 << 30, fold)


_CONVENTIONS = """\
- **Dice** = 2|P∩R| / (|P|+|R|). **HD95**: the larger of the two directed 95th percentiles of the
  distances (mm, anisotropic spacing of the reference) from each boundary voxel of one mask to the nearest
  boundary voxel of the other; boundary = mask minus its face-connected erosion (as in MONAI).
  **NSD** (normalized surface Dice) at {tolerance:g} mm: fraction of boundary voxels of both masks within
  the tolerance of the other boundary; voxel-counting approximation, not the surfel-area version of
  DeepMind's `surface-distance`.
- {empty}
  Present in only one of them: Dice 0, NSD 0, HD95 = inf.
- Infinite HD95 values are left out of the HD95 mean ± std and counted next to it, e.g. `(2 inf)`;
  `inf` alone means every case was infinite. The per-case mean over classes is inf if any class is.
- std is the sample standard deviation (ddof = 1) over cases; "Mean over classes" is the mean ± std over
  cases of each case's mean over classes. Per-case values of every class are in `per_case.csv`.
- The paired test needs at least 6 paired cases (with fewer, a two-sided p < 0.05 is impossible).
- Every prediction was checked to lie on its reference's grid: same shape, spacing (relative {spacing_rtol:g}), origin
  (within {origin_voxels:g} voxel per axis) and direction (cosines within {direction:g}).
"""
