"""`nnunetv2-mambahome benchmark` dispatches to its `speed` and `accuracy` sub-commands."""
from __future__ import annotations

import pytest

from nnunetv2_mambahome.cli import main


def test_accuracy_is_reached_through_benchmark(tmp_path, capsys) -> None:
    # --pred without --labels is one of accuracy.run's own input errors (exit 2 with its message)
    assert main(["benchmark", "accuracy", "--pred", f"a={tmp_path}", "--out", str(tmp_path / "o")]) == 2
    assert "--pred needs --labels" in capsys.readouterr().err


def test_speed_is_reached_through_benchmark(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    assert main(["benchmark", "speed", "-d", "Dataset999_Missing", "--device", "cpu"]) == 2
    assert "dataset.json" in capsys.readouterr().err


def test_benchmark_needs_a_sub_command() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["benchmark"])
    assert exc.value.code == 2
