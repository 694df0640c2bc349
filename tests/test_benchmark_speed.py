"""`benchmark speed` on CPU with hand-written plans: report files, ratio arithmetic, parameter counts, alternation."""
from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest

from nnunetv2_mambahome.benchmark.speed_measure import time_round_robin
from nnunetv2_mambahome.cli import main

DATASET = "Dataset991_SpeedToy"
PATCH = [16, 32, 32]


def _plans() -> dict:
    """A small 3-stage 3d_fullres PlainConvUNet plan (total stride 2x4x4), in the format nnU-Net's planner writes."""
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 3, "features_per_stage": [16, 32, 64], "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
            "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": DATASET, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [2.0, 1.0, 1.0], "original_median_shape_after_transp": [24, 48, 48],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [24, 48, 48], "median_image_size_in_voxels": [24.0, 48.0, 48.0],
            "spacing": [2.0, 1.0, 1.0], "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": resampling, "resampling_fn_seg_kwargs": {**resampling, "is_seg": True},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": resampling, "architecture": arch, "batch_dice": False,
        }},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 1.0, "mean": 0.5, "median": 0.5, "min": 0.0, "percentile_00_5": 0.0, "percentile_99_5": 1.0,
            "std": 0.2}},
    }


@pytest.fixture(scope="module")
def speed_run(tmp_path_factory) -> tuple[Path, dict]:
    """One tiny CPU run: stock nnUNetTrainer vs nnUNetTrainerMambaHoMELight, 2 iterations, one torch thread."""
    root = tmp_path_factory.mktemp("speed")
    folder = root / "pre" / DATASET
    folder.mkdir(parents=True)
    plans = _plans()
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 4,
        "file_ending": ".nii.gz"}))
    out = root / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_preprocessed", str(root / "pre"))
        rc = main(["benchmark", "speed", "-d", "991", "-tr", "nnUNetTrainer", "nnUNetTrainerMambaHoMELight",
                   "--device", "cpu", "--iters", "2", "--warmup", "0", "--threads", "1",
                   "--patch-size", *map(str, PATCH), "--batch-size", "1", "--no-inference", "--out", str(out)])
    assert rc == 0
    return out, plans


@pytest.mark.xdist_group("benchmark_speed")  # one worker runs speed_run
def test_report_files_are_written(speed_run) -> None:
    out, _ = speed_run
    for name in ("speed.md", "speed.csv", "speed.json", "speed_time_ratio.png", "speed_memory_ratio.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "speed_inference_ratio.png").exists()  # --no-inference
    md = (out / "speed.md").read_text()
    assert "nnUNetTrainerMambaHoMELight__nnUNetPlans" in md and "| setup |" in md


@pytest.mark.xdist_group("benchmark_speed")  # one worker runs speed_run
def test_ratios_follow_from_the_per_setup_medians(speed_run) -> None:
    out, _ = speed_run
    report = json.loads((out / "speed.json").read_text())
    assert report["reference"] == "nnUNetTrainer__nnUNetPlans"
    assert report["settings"]["patch_size"] == PATCH and report["settings"]["batch_size"] == 1
    setups = {s["label"]: s for s in report["setups"]}
    assert list(setups) == ["nnUNetTrainer__nnUNetPlans", "nnUNetTrainerMambaHoMELight__nnUNetPlans"]
    ref = setups[report["reference"]]
    for s in setups.values():
        assert len(s["step_seconds"]) == 2 and all(t > 0 for t in s["step_seconds"])
        assert s["median_ms"] == pytest.approx(statistics.median(s["step_seconds"]) * 1e3)
        assert s["peak_memory_mib"] > 0 and s["memory_kind"].startswith("rss_peak")
        for ratio, num, den in (("time_ratio", "median_ms", "median_ms"),
                                ("memory_ratio", "peak_memory_mib", "peak_memory_mib")):
            assert math.isfinite(s[ratio]) and s[ratio] > 0
            assert s[ratio] == pytest.approx(s[num] / ref[den])
        assert s["inference_seconds"] == [] and s["inference_ratio"] is None and s["inference_first_s"] is None
        assert s["warmup_seconds"] == [] and s["gpu_busy_ms"] is None  # --warmup 0; no profiling on CPU
    assert ref["time_ratio"] == 1.0 and ref["memory_ratio"] == 1.0
    with open(out / "speed.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["setup"] for r in rows] == list(setups)
    for r in rows:
        assert float(r["time ratio"]) == pytest.approx(setups[r["setup"]]["time_ratio"])
        assert float(r["memory ratio"]) == pytest.approx(setups[r["setup"]]["memory_ratio"])


@pytest.mark.xdist_group("benchmark_speed")  # one worker runs speed_run
def test_parameter_counts_equal_the_networks_built_directly(speed_run) -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_mambahome.training import nnUNetTrainerMambaHoMELight

    out, plans = speed_run
    plans["configurations"]["3d_fullres"]["patch_size"] = PATCH
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    setups = {s["trainer"]: s for s in json.loads((out / "speed.json").read_text())["setups"]}
    for cls in (nnUNetTrainer, nnUNetTrainerMambaHoMELight):
        net = cls.build_network_architecture(pm, cm, 1, 3, True)
        assert setups[cls.__name__]["parameters"] == sum(p.numel() for p in net.parameters())
        assert setups[cls.__name__]["network"] == type(net).__name__
    assert setups["nnUNetTrainer"]["parameters"] != setups["nnUNetTrainerMambaHoMELight"]["parameters"]


def test_round_robin_alternates_and_drops_warmup() -> None:
    calls: list[str] = []

    def step(name: str, seconds: float):
        return lambda: calls.append(name) or seconds

    times, warmups = time_round_robin({"a": step("a", 1.0), "b": step("b", 2.0)}, warmup=2, iters=3,
                                      log=lambda _: None)
    assert calls == ["a", "b"] * 5
    assert times == {"a": [1.0] * 3, "b": [2.0] * 3}
    assert warmups == {"a": [1.0] * 2, "b": [2.0] * 2}


@pytest.mark.parametrize("extra", [["-tr", "A", "B", "-p", "P1", "P2", "P3"], ["-p", "nnUNetPlans"],
                                   ["-tr", "nnUNetTrainer", "--iters", "0"]])
def test_bad_arguments_are_input_errors(tmp_path, monkeypatch, extra) -> None:
    folder = tmp_path / DATASET
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text(json.dumps(_plans()))
    (folder / "dataset.json").write_text("{}")
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    assert main(["benchmark", "speed", "-d", "991", "--device", "cpu", "--out", str(tmp_path / "o"), *extra]) == 2
