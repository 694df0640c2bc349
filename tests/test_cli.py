"""The console command's conventions, trainer discovery (--export, register()) and the scan-backend log lines."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import nnunetv2_mambahome
from conftest import command_env
from nnunetv2_mambahome.cli import main
from nnunetv2_mambahome.ops import ENV_VAR, explain_auto_choice
from nnunetv2_mambahome.trainer_path import export_line, ext_trainer_status, ext_trainer_value, trainer_dir
from nnunetv2_mambahome.training import scan_backend_log


def _shell(script: str, **env: str) -> str:
    proc = subprocess.run(["bash", "-c", script], env=command_env(**env), capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_version_and_module_entry_point() -> None:
    for cmd in (["nnunetv2-mambahome"], [sys.executable, "-m", "nnunetv2_mambahome"]):
        proc = subprocess.run([*cmd, "--version"], env=command_env(), capture_output=True, text=True)
        assert (proc.returncode, proc.stdout.strip()) == (0, f"nnunetv2-mambahome {nnunetv2_mambahome.__version__}")


def test_no_or_unknown_subcommand_is_a_usage_error(capsys) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "trainer-path" in capsys.readouterr().out


def test_export_prepends_once_and_keeps_existing_paths() -> None:
    ours = trainer_dir()
    assert ext_trainer_value("") == ours
    assert ext_trainer_value(f"/a{os.pathsep}/b") == os.pathsep.join([ours, "/a", "/b"])
    assert ext_trainer_value(f"/a{os.pathsep}{ours}") == f"/a{os.pathsep}{ours}"  # already there: unchanged
    assert export_line("/my dir") == f"export nnUNet_extTrainer='{ours}{os.pathsep}/my dir'"


def test_eval_export_twice_in_a_shell() -> None:
    script = 'eval "$(nnunetv2-mambahome trainer-path --export)"; eval "$(nnunetv2-mambahome trainer-path --export)"; ' \
             'echo "$nnUNet_extTrainer"'
    assert _shell(script, nnUNet_extTrainer="/user/trainers") == os.pathsep.join([trainer_dir(), "/user/trainers"])
    env = {k: v for k, v in command_env().items() if k != "nnUNet_extTrainer"}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == trainer_dir()


def test_register_sets_the_environment_idempotently(monkeypatch) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", "/user/trainers")
    assert not ext_trainer_status()[0] and "trainer-path --export" in ext_trainer_status()[1]
    expected = os.pathsep.join([trainer_dir(), "/user/trainers"])
    assert nnunetv2_mambahome.register() == expected == nnunetv2_mambahome.register()
    assert os.environ["nnUNet_extTrainer"] == expected and ext_trainer_status()[0]


def test_register_makes_nnunet_find_our_trainers(monkeypatch) -> None:
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    nnunetv2_mambahome.register()
    assert recursive_find_trainer_class_by_name("nnUNetTrainerMambaHoMELight").__name__ == "nnUNetTrainerMambaHoMELight"


def test_scan_backend_line_on_cpu(monkeypatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    lines = scan_backend_log.scan_backend_lines(torch.device("cpu"))
    assert lines == [f"selective-scan backend: auto -> {explain_auto_choice(torch.device('cpu'))}"]
    assert lines[0].startswith("selective-scan backend: auto -> torch (pure-PyTorch chunked scan; device cpu")
    monkeypatch.setenv(ENV_VAR, "torch")
    assert scan_backend_log.scan_backend_lines(torch.device("cuda")) == [
        f"selective-scan backend: torch (forced by {ENV_VAR}=torch)"]


@pytest.mark.parametrize("choice, warns", [("torch (mamba_ssm kernels unavailable (ImportError: x))", True),
                                           ("cuda (mamba-ssm 2.3.2 kernels loaded)", False)])
def test_cuda_fallback_to_the_torch_scan_warns_loudly(monkeypatch, choice, warns) -> None:
    """What `auto` picks on CUDA comes from ops.explain_auto_choice; a `torch` pick there is a loud warning."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(scan_backend_log, "explain_auto_choice", lambda device: choice)
    lines = scan_backend_log.scan_backend_lines(torch.device("cuda"))
    assert lines[0] == f"selective-scan backend: auto -> {choice}"
    assert any(line.startswith("WARNING: this CUDA run falls back") for line in lines) == warns
    if warns:
        assert 'pip install --no-build-isolation "nnunetv2-mambahome[cuda]"' in "\n".join(lines)

