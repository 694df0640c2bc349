"""Report helpers shared by the benchmarks: markdown tables, CSV files, PNG bar charts and box plots.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch), so they work
on headless machines and never disturb an interactive session. matplotlib is imported only when a
figure is written (nnU-Net depends on it, so it is always installed).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: Optional[str] = None) -> str:
    """A GitHub-flavoured markdown table; `align` has one of l/c/r per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers) or any(len(row) != len(headers) for row in rows):
        raise ValueError("headers, align and every row must have the same number of columns")
    rule = {"l": ":---", "c": ":---:", "r": "---:"}
    lines = [
        _markdown_row(headers),
        "| " + " | ".join(rule[a] for a in align) + " |",
        *(_markdown_row(row) for row in rows),
    ]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write rows as CSV; floats keep full precision (`repr`), so files round-trip exactly."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(rows)


def bar_chart(path: Path, labels: Sequence[str], values: Sequence[float], title: str, ylabel: str) -> None:
    """One bar per label, value printed above each bar."""
    fig, ax = _figure(len(labels))
    bars = ax.bar(range(len(labels)), values, color="C0")
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    _finish(fig, ax, path, labels, title, ylabel)


def box_plot(path: Path, groups: Mapping[str, Sequence[float]], title: str, ylabel: str) -> None:
    """One box per group over its values drawn as points (non-finite values are left out)."""
    grouped_box_plot(path, {name: {"": values} for name, values in groups.items()}, title, ylabel)


def grouped_box_plot(
    path: Path, groups: Mapping[str, Mapping[str, Sequence[float]]], title: str, ylabel: str
) -> None:
    """Boxes side by side per category, one colour per series: `groups[category][series] = values`.

    Each value is also drawn as a point. Non-finite values are left out; say so in the title when they
    matter (e.g. HD95 = inf).
    """
    categories = list(groups)
    series = list(dict.fromkeys(s for per_series in groups.values() for s in per_series))
    fig, ax = _figure(len(categories) * len(series))
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        positions = [c + (i - (len(series) - 1) / 2) * width for c in range(len(categories))]
        data = [[v for v in groups[cat].get(name, []) if math.isfinite(v)] for cat in categories]
        boxes = ax.boxplot(
            data, positions=positions, widths=width * 0.85, patch_artist=True, manage_ticks=False, showfliers=False
        )
        for patch in boxes["boxes"]:
            patch.set(facecolor=f"C{i}", alpha=0.6)
        for median in boxes["medians"]:
            median.set(color="black")
        for x, values in zip(positions, data):  # the cases themselves, jittered, so small n stays visible
            jitter = (np.random.default_rng(0).random(len(values)) - 0.5) * width * 0.5
            ax.scatter(x + jitter, values, s=9, color=f"C{i}", edgecolors="black", linewidths=0.3, zorder=3)
        if name:
            ax.plot([], [], color=f"C{i}", linewidth=8, alpha=0.6, label=name)  # legend entry
    if any(series):
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _finish(fig, ax, path, categories, title, ylabel)


def _markdown_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _figure(n_items: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 1.0 + 0.45 * n_items), 4.0), dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _finish(fig, ax, path: Path, labels: Sequence[str], title: str, ylabel: str) -> None:
    long_labels = max(map(len, labels), default=0) > 8
    ax.set_xticks(range(len(labels)), labels,
                  rotation=30 if long_labels else 0, ha="right" if long_labels else "center")
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
