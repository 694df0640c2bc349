"""Shared test helpers: where the golden fixtures live and the README's tolerance rule.

The golden fixtures ship in the repository (tests/fixtures/mambahome_reference: the official code's outputs,
with a README on formats, provenance and tolerances), so a bare clone runs the whole suite;
$NNUNETV2_MAMBAHOME_FIXTURES may point at another copy.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# The Triton kernels run on CPUs under Triton's interpreter. It is chosen when a kernel is defined (module import),
# so the variable is set here, before any test imports them; the interpreter's scan is made fast enough for tests.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    if os.environ["TRITON_INTERPRET"] == "1":
        try:
            import triton_interpreter
        except ImportError:  # no Triton in this torch build: the Triton tests skip themselves
            pass
        else:
            triton_interpreter.install()

REPO = Path(__file__).resolve().parents[1]
FIXTURE_DIR = Path(os.environ.get("NNUNETV2_MAMBAHOME_FIXTURES",
                                  Path(__file__).resolve().parent / "fixtures" / "mambahome_reference"))

# fixtures README: ATOL = c * max|ref| rounded up, per module kind (outputs, grads), RTOL per kind
TOLERANCES = {"dyt": (1e-5, 1e-6, 1e-6), "gsc": (1e-5, 1e-5, 1e-4), "home": (1e-4, 1e-4, 1e-4),
              "mamba_block": (1e-4, 1e-5, 1e-4), "net": (1e-5, 2e-5, 1e-4)}


def fixture_kind(name: str) -> str:
    return next(k for k in ("mamba_block", "home", "dyt", "gsc", "net") if name.startswith(k))


def round_up_1sig(x: float) -> float:
    """Round up to one significant digit, as the fixtures README does for its ATOL column."""
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x))
    return math.ceil(x / 10 ** e) * 10 ** e


def assert_close_to_reference(actual: torch.Tensor, ref: torch.Tensor, rtol: float, c: float, max_ref: float = None):
    atol = round_up_1sig(c * (ref.abs().max().item() if max_ref is None else max_ref))
    torch.testing.assert_close(actual, ref, rtol=rtol, atol=atol)


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    if not FIXTURE_DIR.is_dir():
        raise FileNotFoundError(f"golden fixtures not found at {FIXTURE_DIR}; set NNUNETV2_MAMBAHOME_FIXTURES")
    return FIXTURE_DIR


def load_fixture(name: str) -> dict:
    path = FIXTURE_DIR / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"golden fixture {path} missing; set NNUNETV2_MAMBAHOME_FIXTURES")
    return torch.load(path, weights_only=True)


# --- nnU-Net commands run for real (tests/test_end_to_end.py, tests/test_examples.py) ---------------------------
E2E_DATASET_ID = 951
# scripts/test.sh runs several pytest-xdist workers on the machine's cores: nnU-Net's process pools in the commands
# the tests run (preprocessing, export, validation, ensembling) default to one process each.
os.environ.setdefault("nnUNet_def_n_proc", "1")
N_PROC = os.environ["nnUNet_def_n_proc"]


def venv_bin(name: str) -> str:
    """A console script of the running environment (nnUNetv2_train, nnunetv2-mambahome, ...)."""
    return str(Path(sys.executable).parent / name)


def command_env(**overrides: str) -> dict:
    """os.environ with this environment's console scripts first on PATH (the examples call `python`, ...)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return dict(os.environ, PATH=path, **overrides)


def run_command(cmd: list[str], env: dict, cwd: Path) -> str:
    """Run `cmd`, fail the test with the output's tail on a non-zero exit; returns stdout + stderr."""
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def prepared_dataset(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A real raw dataset (brain MRI at 6 mm, 6 training and 2 test cases), planned and preprocessed by nnU-Net;
    returns (root, raw dataset folder, environment with the nnU-Net paths and our trainers on nnUNet_extTrainer)."""
    from nnunetv2_mambahome.trainer_path import trainer_dir

    root = tmp_path_factory.mktemp("e2e")
    env = command_env(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"),
                      nnUNet_results=str(root / "res"), nnUNet_extTrainer=trainer_dir(), nnUNet_n_proc_DA="2",
                      nnUNet_compile="f", PYTHONUNBUFFERED="1")
    run_command([venv_bin("nnunetv2-mambahome"), "make-dataset", "brain", "--dataset-id", str(E2E_DATASET_ID),
                 "--spacing", "6", "--num-train", "6", "--num-test", "2"], env, root)
    run_command([venv_bin("nnUNetv2_plan_and_preprocess"), "-d", str(E2E_DATASET_ID), "-c", "3d_fullres",
                 "-np", N_PROC], env, root)
    return root, next((root / "raw").glob(f"Dataset{E2E_DATASET_ID}_*")), env
