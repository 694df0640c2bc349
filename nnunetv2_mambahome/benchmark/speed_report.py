"""Report of `benchmark speed`: speed.md (paper-ready tables), speed.csv, speed.json and PNG ratio charts."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .report import bar_chart, markdown_table, write_csv


@dataclass
class SetupResult:
    """Everything measured for one setup; ratios are against the reference setup of the same run."""

    label: str
    trainer: str
    plans: str
    network: str
    parameters: int
    compiled: bool
    step_seconds: list[float]
    median_ms: float
    peak_memory_mib: float
    memory_kind: str
    warmup_seconds: list[float] = field(default_factory=list)
    gpu_busy_ms: Optional[float] = None
    peak_reserved_mib: Optional[float] = None
    inference_seconds: list[float] = field(default_factory=list)
    inference_median_s: Optional[float] = None
    inference_first_s: Optional[float] = None
    time_ratio: float = math.nan
    memory_ratio: float = math.nan
    inference_ratio: Optional[float] = None


def add_ratios(results: Sequence[SetupResult], reference: SetupResult) -> None:
    """Fill the ratio fields of every result relative to `reference`."""
    for r in results:
        r.time_ratio = r.median_ms / reference.median_ms
        r.memory_ratio = r.peak_memory_mib / reference.peak_memory_mib
        if r.inference_median_s is not None and reference.inference_median_s:
            r.inference_ratio = r.inference_median_s / reference.inference_median_s


def write_speed_report(out: Path, results: Sequence[SetupResult], reference: SetupResult, meta: dict) -> Path:
    """Write speed.md, speed.csv, speed.json and the ratio charts into `out`; returns the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    headers, rows = _table(results)
    write_csv(out / "speed.csv", headers, [["" if c is None else c for c in row] for row in rows])
    (out / "speed.json").write_text(json.dumps(
        {**meta, "reference": reference.label, "setups": [asdict(r) for r in results]}, indent=2) + "\n")
    labels = [r.label for r in results]
    bar_chart(out / "speed_time_ratio.png", labels, [r.time_ratio for r in results],
              f"Training step time vs {reference.label}", "ratio (lower is faster)")
    bar_chart(out / "speed_memory_ratio.png", labels, [r.memory_ratio for r in results],
              f"Peak memory vs {reference.label}", "ratio (lower is leaner)")
    if all(r.inference_ratio is not None for r in results):
        bar_chart(out / "speed_inference_ratio.png", labels, [r.inference_ratio for r in results],
                  f"Sliding-window inference time vs {reference.label}", "ratio (lower is faster)")
    md = out / "speed.md"
    md.write_text(_markdown(results, reference, meta, headers, rows))
    return md


def _table(results: Sequence[SetupResult]) -> tuple[list[str], list[list[object]]]:
    headers = ["setup", "parameters (M)", "ms / iteration", "time ratio", "GPU busy ms / iteration",
               "warm-up s (all warm-up iterations)", "peak memory (MiB)", "memory ratio", "peak reserved (MiB)",
               "inference s / case", "inference ratio", "inference warm-up s"]
    rows = [[r.label, r.parameters / 1e6, r.median_ms, r.time_ratio, r.gpu_busy_ms,
             sum(r.warmup_seconds) if r.warmup_seconds else None, r.peak_memory_mib, r.memory_ratio,
             r.peak_reserved_mib, r.inference_median_s, r.inference_ratio, r.inference_first_s] for r in results]
    return headers, rows


# markdown number formats of the table's columns, in order
_FORMATS = ("{}", "{:.2f}", "{:.1f}", "{:.2f}", "{:.1f}", "{:.1f}", "{:.0f}", "{:.2f}", "{:.0f}", "{:.3f}", "{:.2f}",
            "{:.2f}")


def _fmt(cell: object, fmt: str) -> str:
    return "-" if cell is None else fmt.format(cell)


def _markdown(results: Sequence[SetupResult], reference: SetupResult, meta: dict, headers, rows) -> str:
    s = meta["settings"]
    memory = {"cuda_max_allocated": "torch.cuda.max_memory_allocated",
              "rss_peak_minus_baseline": "peak RSS minus the RSS after imports"}.get(
        results[0].memory_kind, results[0].memory_kind)
    lines = [
        f"# Speed and memory: {meta['dataset']} {s['configuration']}",
        "",
        f"Device: {meta['device_name']} ({s['device']}); torch {meta['versions']['torch']}, "
        f"nnunetv2 {meta['versions']['nnunetv2']}, CUDA {meta['versions']['cuda'] or '-'}; "
        f"host {meta['hostname']}, {meta['date']}.",
        f"Patch {'x'.join(map(str, s['patch_size']))}, batch {s['batch_size']}; median of {s['iters']} "
        f"training iterations after {s['warmup']} warm-up (compilation, CUDA-graph capture; their total time is "
        f"its own column), setups alternating; ratios vs {reference.label}. GPU busy: device kernel and copy "
        "time per iteration (torch profiler, 3 iterations).",
        f"Memory: {memory}, measured per setup in a fresh process. "
        f"Mamba-HoME selective scan: {meta['mambahome_scan_backend']}.",
        "Inference: nnUNetPredictor sliding window (step 0.5, Gaussian, mirroring), "
        + (f"{s['inference_input']}; median of {s['inference_repeats']} runs after one warm-up run per setup."
           if s["inference_input"] else "not measured (--no-inference)."),
        "",
        markdown_table(headers, [[_fmt(c, f) for c, f in zip(row, _FORMATS)] for row in rows]),
    ]
    compiled = [r.label for r in results if r.compiled]
    if compiled:
        lines.append(f"torch.compile on (the trainer's default): {', '.join(compiled)}.\n")
    return "\n".join(lines)
