"""Every script in examples/ run as a user would, on CPU at tiny size (the shared 6 mm brain dataset).

Tiny means 2-epoch trainers: the examples' own `_tiny` trainer, our `_smoke` trainers and a 2-epoch stock
nnU-Net trainer written here. The multi-GPU launch cannot run without GPUs; its test checks the refusal (the
DDP numerics are tests/test_ddp_cpu.py's). Tests that share a module fixture's training carry one xdist_group
each, so that under pytest-xdist one worker trains it once (and compare_5fold finds its fold done).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import E2E_DATASET_ID, command_env, load_fixture, run_command, venv_bin

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CUSTOM_DIR = EXAMPLES / "custom_trainer"
CUSTOM_TRAINER = "nnUNetTrainerMambaHoMECosineTopK_tiny"
STOCK_TINY = textwrap.dedent('''
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
        nnUNetTrainerNoMirroring)


    class nnUNetTrainer_tiny(nnUNetTrainerNoMirroring):
        """Stock nnU-Net for 2 epochs x 3 iterations."""

        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = 2
            self.num_iterations_per_epoch = 3
            self.num_val_iterations_per_epoch = 1
''')


def _bash(script: Path, env: dict, cwd: Path, *args: str) -> str:
    return run_command(["bash", str(script), *args], env, cwd)


def _model_dir(root: Path, trainer: str, plans: str = "nnUNetPlans", configuration: str = "3d_fullres") -> Path:
    return next((root / "res").glob(f"Dataset{E2E_DATASET_ID}_*")) / f"{trainer}__{plans}__{configuration}"


def test_every_example_says_what_it_shows_and_is_listed() -> None:
    files = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".py", ".sh"))
    listing = (EXAMPLES / "README.md").read_text()
    assert len(files) == 7
    for path in files:
        head = path.read_text().splitlines()[:3]
        assert any("Example:" in line for line in head), path
        assert path.relative_to(EXAMPLES).as_posix() in listing, path
        if path.suffix == ".sh":
            subprocess.run(["bash", "-n", str(path)], check=True)


def test_multi_gpu_launch_refuses_without_enough_gpus(tmp_path) -> None:
    env = command_env(DATASET=str(E2E_DATASET_ID), NUM_GPUS="4096")
    proc = subprocess.run(["bash", str(EXAMPLES / "multi_gpu.sh")], env=env, cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert f"-num_gpus 4096 needs 4096 CUDA GPUs; this machine has {torch.cuda.device_count()}" in proc.stderr


@pytest.fixture(scope="module")
def custom_trained(prepared_dataset) -> tuple[str, Path]:
    """examples/custom_trainer/train.sh with the tiny variant on fold 0 (--npz: reused by the comparison)."""
    root, _, env = prepared_dataset
    env = dict(env, DATASET=str(E2E_DATASET_ID), TRAINER=CUSTOM_TRAINER, DEVICE="cpu", FOLD="0")
    return _bash(CUSTOM_DIR / "train.sh", env, root, "--npz"), _model_dir(root, CUSTOM_TRAINER)


@pytest.mark.slow
@pytest.mark.xdist_group("examples_custom")
def test_custom_trainer_is_found_and_uses_its_schedule(custom_trained) -> None:
    log, model_dir = custom_trained
    assert f"Using trainer '{CUSTOM_TRAINER}' from: {CUSTOM_DIR}" in log
    # cosine over 2 epochs from 3e-4: 3e-4 then 1.5e-4 (poly would give 1.6e-4 at epoch 1)
    rates = re.findall(r"Current learning rate: ([0-9.e-]+)", log)
    assert [float(r) for r in rates] == [3e-4, 1.5e-4]
    assert "selective-scan backend: auto -> torch (pure-PyTorch chunked scan; device cpu" in log
    checkpoint = torch.load(model_dir / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == CUSTOM_TRAINER
    group = checkpoint["optimizer_state"]["param_groups"][0]
    assert "betas" in group and group["weight_decay"] == 1e-4  # AdamW's, not nnU-Net's SGD


@pytest.mark.slow
@pytest.mark.xdist_group("examples_custom")
def test_compare_5fold_at_tiny_size(custom_trained, prepared_dataset, tmp_path) -> None:
    """One fold of a stock and our tiny trainer, nnU-Net's ensembling, then benchmark accuracy on all three."""
    root, raw, env = prepared_dataset
    stock_dir = tmp_path / "stock_trainers"
    stock_dir.mkdir()
    (stock_dir / "stock_tiny.py").write_text(STOCK_TINY)
    out = tmp_path / "compare"
    env = dict(env, DATASET=str(E2E_DATASET_ID), STOCK="nnUNetTrainer_tiny", MAMBA=CUSTOM_TRAINER, FOLDS="0",
               DEVICE="cpu", OUT=str(out), nnUNet_extTrainer=os.pathsep.join([str(CUSTOM_DIR), str(stock_dir)]))
    log = _bash(EXAMPLES / "compare_5fold.sh", env, root)
    assert f"[compare] {CUSTOM_TRAINER} fold 0: done before, skipped" in log
    assert "[compare] training nnUNetTrainer_tiny fold 0" in log
    ensemble = (root / "res" / raw.name / "ensembles"
                / f"ensemble___nnUNetTrainer_tiny__nnUNetPlans__3d_fullres___{CUSTOM_TRAINER}__nnUNetPlans__3d_fullres___0")
    assert (ensemble / "summary.json").is_file() and "*Best*:" in log
    validation_cases = {p.name for p in (_model_dir(root, CUSTOM_TRAINER) / "fold_0" / "validation").glob("*.nii.gz")}
    assert {p.name for p in ensemble.glob("*.nii.gz")} == validation_cases
    assert "evaluating" in log  # benchmark accuracy's progress bar
    markdown = (out / "accuracy.md").read_text()
    for name in ("| stock |", "| mambahome |", "| ensemble |", "Paired test: stock vs mambahome"):
        assert name in markdown, name


OVERRIDE_TRAINER, OVERRIDE_PLANS = "nnUNetTrainerMambaHoMELight_smoke", "nnUNetPlans_MambaHoME_light_d1"


@pytest.fixture(scope="module")
def override_trained(prepared_dataset) -> tuple[str, Path]:
    """examples/plans_override.sh with our smoke trainer."""
    root, _, env = prepared_dataset
    env = dict(env, DATASET=str(E2E_DATASET_ID), TRAINER=OVERRIDE_TRAINER, DEVICE="cpu")
    return _bash(EXAMPLES / "plans_override.sh", env, root), _model_dir(root, OVERRIDE_TRAINER, OVERRIDE_PLANS)


def _network_shapes(configuration_manager, num_classes: int) -> dict[str, tuple[int, ...]]:
    from nnunetv2_mambahome.nets import MambaHoMEUNet

    net = MambaHoMEUNet.from_configuration(configuration_manager, 1, num_classes, True, preset="light")
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.slow
@pytest.mark.xdist_group("examples_override")
def test_plans_override_trains_the_overridden_network(override_trained, prepared_dataset) -> None:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    root, raw, _ = prepared_dataset
    log, model_dir = override_trained
    arch = json.loads((model_dir / "plans.json").read_text())["configurations"]["3d_fullres"]["architecture"]
    assert arch["arch_kwargs"]["mamba_home"] == {"preset": "light", "depth": 1, "max_token_stages": 3,
                                                 "slots_per_expert": 2}
    assert "Mamba-HoME preset 'light'" in log
    weights = torch.load(model_dir / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["network_weights"]
    trained = {k: tuple(v.shape) for k, v in weights.items()}
    classes = len(json.loads((raw / "dataset.json").read_text())["labels"])
    override = PlansManager(str(model_dir / "plans.json")).get_configuration("3d_fullres")
    default = PlansManager(str(root / "pre" / raw.name / "nnUNetPlans.json")).get_configuration("3d_fullres")
    assert trained == _network_shapes(override, classes)
    assert trained != _network_shapes(default, classes)  # the same trainer on the default plans: other network


@pytest.mark.slow
@pytest.mark.xdist_group("examples_override")
def test_python_api_builds_the_network_and_predicts_a_folder(override_trained, prepared_dataset, tmp_path) -> None:
    """With nnUNet_extTrainer unset, only the example's register() lets nnU-Net find the checkpoint's trainer."""
    root, raw, env = prepared_dataset
    _, model_dir = override_trained
    out = tmp_path / "pred"
    bare = {k: v for k, v in env.items() if k != "nnUNet_extTrainer"}
    log = run_command([venv_bin("python"), str(EXAMPLES / "python_api.py"), str(model_dir), str(raw / "imagesTs"),
                       str(out), "--device", "cpu"], bare, root)
    weights = torch.load(model_dir / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["network_weights"]
    n_params = sum({v.data_ptr(): v.numel() for v in weights.values()}.values())  # the decoder shares the encoder's
    assert f"MambaHoMEUNet built from {model_dir / 'plans.json'}: {n_params:,} parameters" in log
    cases = sorted(p.name.replace("_0000.nii.gz", ".nii.gz") for p in (raw / "imagesTs").glob("*_0000.nii.gz"))
    assert sorted(p.name for p in out.glob("*.nii.gz")) == cases

    # demo-report on these predictions: its untrained-network prediction shows progress
    report = run_command([venv_bin("nnunetv2-mambahome"), "demo-report", "-d", str(E2E_DATASET_ID), "--pred",
                          str(out), "-tr", OVERRIDE_TRAINER, "--out", str(tmp_path / "report")], env, root)
    assert f"predicting {len(cases)} held-out case(s) with the untrained network" in report
    assert all(f"Predicting {c.removesuffix('.nii.gz')}:" in report for c in cases) and "100%|" in report


@pytest.mark.slow
def test_finetune_from_official_weights(prepared_dataset, tmp_path) -> None:
    root, raw, env = prepared_dataset
    official = tmp_path / "official_model.pt"
    torch.save({"model": load_fixture("net")["state_dict"], "epoch": 0}, official)  # official train.py layout
    trainer = "nnUNetTrainerMambaHoMEPaper_smoke"
    env = dict(env, DATASET=str(E2E_DATASET_ID), WEIGHTS=str(official), TRAINER=trainer, FOLD="1", DEVICE="cpu")
    log = _bash(EXAMPLES / "finetune_official.sh", env, root)
    assert f"Loaded official Mamba-HoME weights from {official}" in log
    assert "MambaHoMEPaperNet" in log and "AdamW" in log
    assert (_model_dir(root, trainer, configuration="3d_fullres_p16") / "fold_1" / "checkpoint_final.pth").is_file()
