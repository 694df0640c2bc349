"""Aggregating per-case accuracy results: mean ± std with infinite HD95 counted apart, and paired tests.

nan values (a class absent from both masks under nnU-Net's convention, `metrics.EMPTY_CONVENTIONS`) are left
out of every mean, as `np.nanmean` does in nnU-Net's summary.json.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import numpy as np

METRICS = ("dice", "hd95", "nsd")

# With fewer pairs a two-sided Wilcoxon signed-rank test cannot reach p < 0.05 (smallest p is 2 / 2**n).
MIN_PAIRS = 6


@dataclass(frozen=True)
class CaseResult:
    """Metrics of one class in one case of one prediction set."""

    set: str
    fold: str
    case: str
    label: str
    name: str
    dice: float
    hd95: float
    nsd: float


@dataclass(frozen=True)
class Summary:
    """mean and sample std (ddof=1) of the finite values; `n_inf` infinite values are left out (and nans)."""

    mean: float
    std: float
    n: int
    n_inf: int


@dataclass(frozen=True)
class PairedTest:
    """Wilcoxon signed-rank test of set A against set B on one per-case metric (n/a: `reason` says why)."""

    metric: str
    n: int
    n_excluded: int  # common cases dropped because a value was not finite
    mean_a: float
    mean_b: float
    statistic: Optional[float]
    pvalue: Optional[float]
    reason: str


def summarize(values: Iterable[float]) -> Summary:
    """Summary of values, counting infinite ones (HD95 = inf when one mask is empty) apart, skipping nans."""
    array = np.asarray(list(values), dtype=float)
    finite = array[np.isfinite(array)]
    mean = float(finite.mean()) if finite.size else math.nan
    std = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return Summary(mean=mean, std=std, n=int(finite.size), n_inf=int(np.isinf(array).sum()))


def per_case_means(results: Iterable[CaseResult], metric: str) -> dict[str, float]:
    """case -> mean over classes of `metric` (inf if any class is inf, nans skipped, nan if all are nan);
    pass the results of one set."""
    by_case: dict[str, list[float]] = defaultdict(list)
    for r in results:
        by_case[r.case].append(getattr(r, metric))
    return {case: _nanmean(values) for case, values in by_case.items()}


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def paired_wilcoxon(metric: str, a: Mapping[str, float], b: Mapping[str, float]) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test over the cases present in both `a` and `b` with finite values."""
    from scipy.stats import wilcoxon

    common = sorted(set(a) & set(b))
    pairs = [(a[c], b[c]) for c in common if math.isfinite(a[c]) and math.isfinite(b[c])]
    x = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs], dtype=float)
    n, excluded = len(pairs), len(common) - len(pairs)
    mean_a, mean_b = (float(x.mean()), float(y.mean())) if n else (math.nan, math.nan)

    def not_applicable(reason: str) -> PairedTest:
        return PairedTest(metric, n, excluded, mean_a, mean_b, None, None, reason)

    if n < MIN_PAIRS:
        return not_applicable(f"{n} paired cases; at least {MIN_PAIRS} are needed for p < 0.05 to be attainable")
    if np.all(x == y):
        return not_applicable("all paired differences are zero")
    result = wilcoxon(x, y)
    return PairedTest(metric, n, excluded, mean_a, mean_b, float(result.statistic), float(result.pvalue), "")
