"""Shared report helpers: markdown tables, CSV round trip, PNG figures."""
from __future__ import annotations

import csv
import math

import pytest

from nnunetv2_mambahome.benchmark.report import bar_chart, box_plot, grouped_box_plot, markdown_table, write_csv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_markdown_table_layout_and_escaping():
    table = markdown_table(["Model", "Dice"], [["a|b", "0.9"], ["c", 1]])
    assert table == "| Model | Dice |\n| :--- | ---: |\n| a\\|b | 0.9 |\n| c | 1 |\n"
    assert markdown_table(["x"], [], align="c") == "| x |\n| :---: |\n"


def test_markdown_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="same number of columns"):
        markdown_table(["a", "b"], [["only one"]])


def test_csv_round_trips_floats_and_inf(tmp_path):
    values = [0.1 + 0.2, math.inf, 1 / 3]
    write_csv(tmp_path / "t.csv", ["v"], [[v] for v in values])
    with open(tmp_path / "t.csv", newline="") as f:
        assert [float(row["v"]) for row in csv.DictReader(f)] == values


def test_figures_are_png(tmp_path):
    bar_chart(tmp_path / "bar.png", ["nnU-Net", "Mamba-HoME"], [12.5, 9.0], "Speed", "ms / iteration")
    box_plot(tmp_path / "box.png", {"a": [1.0, 2.0, math.inf], "b": []}, "Box", "mm")
    grouped_box_plot(tmp_path / "grouped.png", {"liver": {"A": [0.9, 0.8], "B": [0.7]}}, "Grouped", "Dice")
    for name in ("bar.png", "box.png", "grouped.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
