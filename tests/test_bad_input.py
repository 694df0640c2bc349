"""Bad input fails early, in one clear line, with exit code 2, and writes nothing (issue 17, cases 1, 3 and 5).

Each case runs the console command as a user would (`cli.main`), then checks the exit code, that the error is
one line naming the key, the value and what is allowed (no traceback), and that no file was written or changed.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from bad_input_helpers import ARCH, DATASET, PATCH, snapshot, write_preprocessed
from nnunetv2_mambahome.cli import main
from nnunetv2_mambahome.nets import MambaHoMERule, MambaHoMEUNet, available_presets
from nnunetv2_mambahome.plans_writer import NETWORK_CLASS
from nnunetv2_mambahome.settings import MAMBA_HOME_SETTINGS, SettingError
from plans_shapes import configuration, plans, resenc_arch


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


# ------------------------------------------------------------------------------------------------ write-plans

@pytest.fixture
def preprocessed(tmp_path, monkeypatch):
    """$nnUNet_preprocessed with one dataset (a 3-stage plan: 2 Mamba-HoME stages) and ResEnc plans beside it."""
    root = tmp_path / "pre"
    folder = write_preprocessed(root)
    (folder / "nnUNetResEncUNetMPlans.json").write_text(json.dumps(plans(PATCH, resenc_arch([4, 8, 16], [[3, 3, 3]] * 3,
                                                                                          ARCH["arch_kwargs"]["strides"]))))
    monkeypatch.setenv("nnUNet_preprocessed", str(root))
    return tmp_path


WRITE_PLANS_CASES = {
    "list shorter than the stages": (["--set", "group_sizes=[1]"],
                                     ["mamba_home.group_sizes has 1 entries but the plan has 2 Mamba-HoME stages"]),
    "list longer than the stages": (["--set", "num_experts=[2,4,6]"], ["mamba_home.num_experts has 3 entries"]),
    "string for an integer": (["--set", 'depth="two"'], ['mamba_home.depth="two"', "use a positive integer"]),
    "negative group size": (["--set", "group_sizes=[-1,2]"], ["mamba_home.group_sizes=[-1, 2]",
                                                              "a list of positive integers"]),
    "zero depth": (["--set", "depth=0"], ["mamba_home.depth=0", "positive integer"]),
    "float for an integer": (["--set", "depth=1.5"], ["mamba_home.depth=1.5", "positive integer"]),
    "first stage beyond the plan": (["--set", "first_stage=9"],
                                    ["mamba_home.first_stage=9 is not allowed for a 3-stage plan: use 0..2"]),
    "zero token stages": (["--set", "max_token_stages=0"], ["mamba_home.max_token_stages=0", "or null"]),
    "negative expert_mult": (["--set", "expert_mult=-1"], ["mamba_home.expert_mult=-1", "positive number"]),
    "string for a bool": (["--set", 'home_out_linear="no"'], ['mamba_home.home_out_linear="no"', "true or false"]),
    "integer for a bool": (["--set", "home_out_linear=1"], ["mamba_home.home_out_linear=1", "true or false"]),
    "unknown setting": (["--set", "bogus=1"], ["unknown Mamba-HoME setting(s) ['bogus']", "known: d_conv"]),
    "unknown preset": (["--preset", "nope"], ['mamba_home.preset="nope"', "available: ['large', 'light', 'paper']"]),
    "preset outside the presets": (["--preset", "../paper"], ["unknown Mamba-HoME preset"]),
    "name escaping the dataset": (["--name", "../../x"], ["--name '../../x' is not allowed", "plans identifier"]),
    "name breaking nnU-Net folders": (["--name", "a__b"], ["--name 'a__b' is not allowed"]),
    "source escaping the dataset": (["-p", "../x"], ["-p '../x' is not allowed"]),
    "overwriting the source": (["--name", "nnUNetPlans", "--force"], ["--name nnUNetPlans is the source plans"]),
    "overwriting other stock plans": (["--name", "nnUNetResEncUNetMPlans", "--force"],
                                      ["was not written by write-plans", "choose another --name"]),
    "existing target": (["--name", "nnUNetResEncUNetMPlans"], ["exists; pass --force"]),
    "unknown dataset": (["-d", "996"], ["-d 996: Could not find a dataset with the ID 996"]),
}


@pytest.mark.parametrize("argv, fragments", WRITE_PLANS_CASES.values(), ids=WRITE_PLANS_CASES.keys())
def test_write_plans_rejects_bad_input_and_writes_nothing(preprocessed, capsys, argv, fragments) -> None:
    before = snapshot(preprocessed)
    argv = argv if "-d" in argv else ["-d", "997", *argv]
    assert main(["write-plans", *argv]) == 2
    _one_line_error(capsys, "nnunetv2-mambahome write-plans: error: ", *fragments)
    assert snapshot(preprocessed) == before


def test_write_plans_value_that_is_not_json_is_an_argparse_error(preprocessed, capsys) -> None:
    before = snapshot(preprocessed)
    with pytest.raises(SystemExit) as exc:
        main(["write-plans", "-d", "997", "--set", "depth=two"])
    assert exc.value.code == 2
    assert "--set depth: 'two' is not JSON" in capsys.readouterr().err
    assert snapshot(preprocessed) == before


def test_write_plans_good_input_keeps_its_values_and_force_replaces_only_its_own(preprocessed, capsys) -> None:
    folder = preprocessed / "pre" / DATASET
    source = (folder / "nnUNetPlans.json").read_bytes()
    assert main(["write-plans", "-d", "997", "--preset", "light", "--set", "home_out_linear=false",
                 "--set", "group_sizes=[64,32]", "--name", "mine"]) == 0
    written = json.loads((folder / "mine.json").read_text())
    mamba_home = written["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["mamba_home"]
    assert mamba_home == {"preset": "light", "home_out_linear": False, "group_sizes": [64, 32]}
    assert (folder / "nnUNetPlans.json").read_bytes() == source
    assert main(["write-plans", "-d", "997", "--preset", "paper", "--name", "mine", "--force"]) == 0
    written = json.loads((folder / "mine.json").read_text())
    assert written["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["mamba_home"] == {"preset": "paper"}
    assert not list(folder.glob(".*partial"))


def test_home_out_linear_false_builds_the_network_without_the_linear() -> None:
    """`"no"` used to become True; false must give fewer parameters than true (one Linear per HoME layer)."""
    counts = {}
    for value in (True, False):
        arch = json.loads(json.dumps(ARCH))
        arch["network_class_name"] = NETWORK_CLASS  # Mamba-HoME settings live in MambaHoMEUNet plans
        arch["arch_kwargs"]["mamba_home"] = {"preset": "light", "home_out_linear": value}
        with torch.device("meta"):
            net = MambaHoMEUNet.from_configuration(configuration(plans(PATCH, arch)), 1, 2, True)
        counts[value] = sum(p.numel() for p in net.parameters())
    assert counts[False] < counts[True]


# ---------------------------------------------------------------------------------- the schema and the plans

def test_schema_covers_every_rule_field_and_every_preset_passes() -> None:
    assert set(MAMBA_HOME_SETTINGS) == {f.name for f in dataclasses.fields(MambaHoMERule)}
    for preset in available_presets():
        rule = MambaHoMERule.from_dict({"preset": preset})
        assert isinstance(rule.expert_mult, float) and isinstance(rule.home_out_linear, bool)
    with pytest.raises(SettingError, match='mamba_home="light" is not allowed: use a JSON object'):
        MambaHoMERule.from_dict("light")
    with pytest.raises(SettingError, match="mamba_home.slots_per_expert=0"):
        MambaHoMERule(slots_per_expert=0)  # built directly, not from a dict: the same schema


@pytest.mark.parametrize("mamba_home, fragment", [
    ({"depth": "2"}, 'mamba_home.depth="2" is not allowed'),
    ({"depth": True}, "mamba_home.depth=true is not allowed"),
    ({"expert_mult": float("inf")}, "mamba_home.expert_mult=Infinity is not allowed"),
    ({"num_experts": []}, "mamba_home.num_experts=[] is not allowed"),
    ({"group_sizes": [64, "32"]}, 'mamba_home.group_sizes=[64, "32"] is not allowed'),
], ids=["string", "bool", "infinite", "empty list", "string in list"])
def test_plans_values_are_checked_when_the_trainer_builds_the_network(mamba_home, fragment) -> None:
    """Plans edited by hand reach the same schema as write-plans (nnUNetv2_train builds the net in initialize)."""
    arch = json.loads(json.dumps(ARCH))
    arch["network_class_name"] = NETWORK_CLASS
    arch["arch_kwargs"]["mamba_home"] = mamba_home
    with pytest.raises(SettingError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        MambaHoMEUNet.from_configuration(configuration(plans(PATCH, arch)), 1, 2, True)


# ------------------------------------------------------------------------------------------------ param-count

@pytest.mark.parametrize("argv", [["--classes", "0"], ["--classes=-3"], ["--in-channels", "0"], ["--classes", "x"]])
def test_param_count_rejects_non_positive_counts(capsys, argv) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["param-count", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "is not allowed: use an integer >= 1" in err


# ------------------------------------------------------------------------------------------------ benchmark speed

SPEED_CASES = {
    "missing case": (["--inference-case", "nocase"], {}, ["--inference-case 'nocase' is not a preprocessed case",
                                                          "(cases: none)"]),
    "wrong rank": (["--inference-shape", "8", "8"], {}, ["--inference-shape 8 8 is not allowed: give 3 positive sizes"]),
    "zero size": (["--inference-shape", "8", "0", "8"], {}, ["--inference-shape 8 0 8 is not allowed"]),
    "unknown device": (["--device", "tpu"], {}, ["--device 'tpu' is not allowed: use cpu, cuda or cuda:N"]),
    "bogus scan backend": ([], {"NNUNETV2_MAMBAHOME_SCAN": "bogus"}, ["NNUNETV2_MAMBAHOME_SCAN='bogus' cannot be used"]),
    "bogus token dtype": ([], {"NNUNETV2_MAMBAHOME_TOKEN_DTYPE": "fp8"}, ["NNUNETV2_MAMBAHOME_TOKEN_DTYPE='fp8'"]),
}


@pytest.mark.parametrize("argv, env, fragments", SPEED_CASES.values(), ids=SPEED_CASES.keys())
def test_benchmark_speed_checks_inputs_before_any_work(tmp_path, monkeypatch, capsys, argv, env, fragments) -> None:
    write_preprocessed(tmp_path / "pre")
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    argv = ["--device", "cpu", *argv] if "--device" not in argv else argv
    before = snapshot(tmp_path)
    assert main(["benchmark", "speed", "-d", "997", "-tr", "nnUNetTrainerMambaHoMELight", "--iters", "1",
                 "--warmup", "0", "--out", str(tmp_path / "report"), *argv]) == 2
    out = capsys.readouterr()
    assert "building" not in out.out and "timing" not in out.out  # nothing was built or timed
    err = out.err.strip()
    assert len(err.splitlines()) == 1 and all(f in err for f in fragments), err
    assert snapshot(tmp_path) == before and not (tmp_path / "report").exists()


def test_benchmark_speed_accepts_a_preprocessed_case(tmp_path, monkeypatch) -> None:
    """The up-front case check finds cases as nnU-Net's dataset classes do (here .npz + .pkl)."""
    import argparse

    from nnunetv2_mambahome.benchmark import speed
    from nnunetv2_mambahome.benchmark.speed_setup import Setup, Workload

    folder = write_preprocessed(tmp_path)
    data = folder / "nnUNetPlans_3d_fullres"
    data.mkdir()
    np.savez_compressed(data / "case_7.npz", data=np.zeros((1, 4, 4, 4), np.float32))
    (data / "case_7.pkl").write_bytes(b"")
    workload = Workload(str(folder), "3d_fullres", "cpu", tuple(PATCH), 1)
    args = argparse.Namespace(no_inference=False, inference_shape=None, inference_case="case_7")
    speed._check_inference_input(args, folder, Setup("nnUNetTrainer", "nnUNetPlans"), workload)
    args.inference_case = "case_8"
    with pytest.raises(ValueError, match=r"'case_8' is not a preprocessed case .* \(cases: case_7\)"):
        speed._check_inference_input(args, folder, Setup("nnUNetTrainer", "nnUNetPlans"), workload)


# ------------------------------------------------------------------------------------------------ demo-report

def _write_label(path, value: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 4, 4), value, np.uint8)), str(path))


@pytest.fixture
def demo_dataset(tmp_path, monkeypatch):
    raw = tmp_path / "raw" / DATASET
    (raw / "imagesTs").mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}))
    _write_label(raw / "imagesTs" / "case_0_0000.nii.gz")
    _write_label(raw / "labelsTs" / "case_0.nii.gz")
    write_preprocessed(tmp_path / "pre")
    (tmp_path / "pred_empty").mkdir()
    (tmp_path / "pred_ok").mkdir()
    _write_label(tmp_path / "pred_ok" / "case_0.nii.gz")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    return tmp_path


@pytest.mark.parametrize("pred, extra, fragments", [
    ("MISSING", [], ["--pred", "MISSING: folder not found"]),
    ("pred_empty", [], ["has no prediction for 1 of 1 held-out case(s) (e.g. case_0.nii.gz)"]),
    ("pred_ok", ["-tr", "nnUNetTrainerNoSuchThing"], ["-tr nnUNetTrainerNoSuchThing: no such trainer"]),
    ("pred_ok", ["--device", "tpu"], ["--device 'tpu' is not allowed"]),
], ids=["missing predictions", "empty predictions", "unknown trainer", "unknown device"])
def test_demo_report_checks_inputs_before_predicting(demo_dataset, capsys, pred, extra, fragments) -> None:
    before = snapshot(demo_dataset)
    argv = ["demo-report", "-d", "997", "--pred", str(demo_dataset / pred), "--out", str(demo_dataset / "report")]
    assert main(argv + (extra if "-tr" in extra else ["-tr", "nnUNetTrainerMambaHoMELight", *extra])) == 2
    out = capsys.readouterr()
    assert "predicting" not in out.out  # the untrained network never ran
    err = out.err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and all(f in err for f in fragments), err
    assert snapshot(demo_dataset) == before and not (demo_dataset / "report").exists()


# ------------------------------------------------------------------------------------------------ benchmark accuracy

def _write_volume(path, origin=(0.0, 0.0, 0.0), direction=None) -> None:
    array = np.zeros((6, 8, 8), np.uint8)
    array[1:5, 2:6, 2:6] = 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


@pytest.mark.parametrize("origin, direction, fragment", [
    ((500.0, 0.0, 0.0), None, "has origin (500.0, 0.0, 0.0) mm (x, y, z) but its reference"),
    ((0.0, 0.0, 0.2), None, "off by more than 0.05 voxel"),
    ((0.0, 0.0, 0.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1), "has direction (-1.0, 0.0, 0.0"),
    ((1e-4, 0.0, 0.0), None, None),
], ids=["origin 500 mm off", "origin 0.1 voxel off", "flipped x", "rounding-level offset"])
def test_benchmark_accuracy_compares_origin_and_direction(tmp_path, capsys, origin, direction, fragment) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}))
    _write_volume(tmp_path / "labels" / "c.nii.gz")
    _write_volume(tmp_path / "pred" / "c.nii.gz", origin, direction)
    rc = main(["benchmark", "accuracy", "--pred", f"p={tmp_path / 'pred'}", "--labels", str(tmp_path / "labels"),
               "--dataset-json", str(tmp_path / "dataset.json"), "-np", "1", "--out", str(tmp_path / "out")])
    if fragment is None:
        assert rc == 0
        report = " ".join((tmp_path / "out" / "accuracy.md").read_text().split())
        assert "origin (within 0.05 voxel per axis) and direction (cosines within 0.001)" in report
    else:
        assert rc == 2 and not (tmp_path / "out").exists()
        assert fragment in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ make-dataset

@pytest.mark.parametrize("kind", ["brain", "abdomen"])
def test_make_dataset_refuses_a_spacing_too_coarse_to_plan_on(tmp_path, capsys, kind) -> None:
    """--spacing 200 used to write 1x2x1 volumes that nnU-Net's planner then fails on; the suggested spacing fits."""
    import re

    from nnunetv2_mambahome.datasets import abdomen, brain, sources
    from nnunetv2_mambahome.datasets.nnunet_raw import MIN_VOXELS_PER_AXIS

    # on a cold cache the first fetch draws a progress bar on stderr: fetch first, so only the error is checked
    sources.mricron_templates() if kind == "brain" else sources.totalsegmentator_files()
    capsys.readouterr()
    argv = ["make-dataset", kind, "--raw-dir", str(tmp_path), "--num-train", "1", "--num-test", "0"]
    assert main([*argv, "--spacing", "200"]) == 2
    err = _one_line_error(capsys, "--spacing 200 mm gives volumes of", f"needs at least {MIN_VOXELS_PER_AXIS} per axis")
    assert not any(tmp_path.iterdir())
    largest = float(re.search(r"use --spacing ([0-9.]+) or less", err).group(1))
    load = brain.load_brain_template if kind == "brain" else abdomen.load_abdomen_sources
    fits = load(largest)
    grids = [fits.grid] if kind == "brain" else [s.grid for s in fits.values()]
    assert min(min(g.shape) for g in grids) >= MIN_VOXELS_PER_AXIS
    with pytest.raises(ValueError, match="gives volumes of"):
        load(largest * 1.15)
