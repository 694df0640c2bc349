"""`doctor` never crashes and says what will fail; bad NNUNETV2_MAMBAHOME_* values fail at trainer start with the
same one-line message (issue 17, case 2). The device is pinned to the CPU so results do not depend on the machine."""
from __future__ import annotations

import pytest
import torch

from bad_input_helpers import write_preprocessed
from nnunetv2_mambahome.cli import main
from nnunetv2_mambahome.settings import SettingError
from nnunetv2_mambahome.trainer_path import trainer_dir

PLUGIN_VARS = ("NNUNETV2_MAMBAHOME_SCAN", "NNUNETV2_MAMBAHOME_TOKEN_DTYPE", "NNUNETV2_MAMBAHOME_NORM",
               "NNUNETV2_MAMBAHOME_LAYOUT")
NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_compile")


@pytest.fixture
def healthy(tmp_path, monkeypatch):
    """A CPU machine with every nnU-Net variable set right and none of the plugin's variables set."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in PLUGIN_VARS + ("nnUNet_compile",):
        monkeypatch.delenv(name, raising=False)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setenv("nnUNet_extTrainer", trainer_dir())
    return tmp_path


def _doctor(capsys) -> tuple[int, list[str]]:
    rc = main(["doctor"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out.splitlines()


def test_healthy_machine_reports_every_setting_and_exits_0(healthy, capsys) -> None:
    rc, lines = _doctor(capsys)
    assert rc == 0 and not [line for line in lines if line.startswith("ACTION")], lines
    for name in PLUGIN_VARS + NNUNET_VARS:
        assert any(name in line for line in lines), name
    assert any(line.startswith("OK NNUNETV2_MAMBAHOME_SCAN unset (= auto): selective-scan backend; runs torch on cpu")
               for line in lines)


@pytest.mark.parametrize("env, expected", [
    ({"NNUNETV2_MAMBAHOME_SCAN": "bogus"},
     "ACTION NNUNETV2_MAMBAHOME_SCAN='bogus' cannot be used on cpu: unknown scan backend 'bogus'"),
    ({"NNUNETV2_MAMBAHOME_SCAN": "cuda"},
     "ACTION NNUNETV2_MAMBAHOME_SCAN='cuda' cannot be used on cpu: scan backend 'cuda' requested but the tensors "
     "are not on a CUDA device"),
    ({"NNUNETV2_MAMBAHOME_TOKEN_DTYPE": "fp8"},
     "ACTION NNUNETV2_MAMBAHOME_TOKEN_DTYPE='fp8': use one of ['auto', 'bfloat16', 'float32']"),
    ({"NNUNETV2_MAMBAHOME_NORM": "cudnn"},
     "ACTION NNUNETV2_MAMBAHOME_NORM='cudnn': use one of auto, torch, triton"),
    ({"NNUNETV2_MAMBAHOME_LAYOUT": "nhwc"},
     "ACTION NNUNETV2_MAMBAHOME_LAYOUT='nhwc': use one of auto, standard, channels_last"),
    ({"nnUNet_results": None}, "ACTION nnUNet_results is not set"),
    ({"nnUNet_extTrainer": "/elsewhere"}, "ACTION nnUNet_extTrainer does not include this plugin's trainers"),
], ids=["unknown scan backend", "cuda scan on a cpu machine", "unknown token dtype", "unknown norm",
        "unknown layout", "no results folder", "trainers not on the path"])
def test_doctor_says_what_will_fail_and_exits_1(healthy, monkeypatch, capsys, env, expected) -> None:
    for name, value in env.items():
        monkeypatch.delenv(name) if value is None else monkeypatch.setenv(name, value)
    rc, lines = _doctor(capsys)
    actions = [line for line in lines if line.startswith("ACTION")]
    assert rc == 1 and len(actions) == 1 and actions[0].startswith(expected), actions


def test_doctor_survives_a_check_that_raises(healthy, monkeypatch, capsys) -> None:
    def broken():
        raise OSError("disk on fire")

    monkeypatch.setattr("nnunetv2_mambahome.trainer_path.ext_trainer_status", broken)
    rc, lines = _doctor(capsys)
    assert rc == 1
    assert "ACTION could not check nnU-Net's environment settings: OSError: disk on fire" in lines
    assert any(line.startswith("OK NNUNETV2_MAMBAHOME_TOKEN_DTYPE") for line in lines)  # the other checks still ran


@pytest.mark.parametrize("name, value", [("NNUNETV2_MAMBAHOME_SCAN", "bogus"), ("NNUNETV2_MAMBAHOME_SCAN", "cuda"),
                                         ("NNUNETV2_MAMBAHOME_TOKEN_DTYPE", "fp8")])
def test_bad_environment_fails_at_trainer_start_with_the_doctors_message(healthy, monkeypatch, capsys, name,
                                                                         value) -> None:
    """As nnUNetv2_train creates the trainer (before initialize and any data-loading worker), on the CPU too."""
    from nnunetv2.run.run_training import get_trainer_from_args

    write_preprocessed(healthy / "nnUNet_preprocessed")
    monkeypatch.setenv(name, value)
    _, lines = _doctor(capsys)
    doctor_line = next(line for line in lines if line.startswith("ACTION"))
    with pytest.raises(SettingError) as exc:
        get_trainer_from_args("997", "3d_fullres", 0, "nnUNetTrainerMambaHoMELight", device=torch.device("cpu"))
    assert f"ACTION {exc.value}" == doctor_line
    assert not any((healthy / "nnUNet_results").iterdir()), "nothing may be written before the check"
