"""Shared test helpers: where the golden fixtures live and the README's tolerance rule."""
from __future__ import annotations

import math
import os
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
                                  REPO.parent / "shared" / "fixtures" / "mambahome_reference"))

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
