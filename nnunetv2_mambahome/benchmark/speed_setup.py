"""Setups of `benchmark speed`: an nnU-Net trainer built and initialised exactly as training does, and its batch.

A setup is a (trainer class name, plans identifier) pair. Trainer classes are found by nnU-Net's own lookup,
with this plugin's trainer directory added to nnUNet_extTrainer, so `-tr` names work as in `nnUNetv2_train`.
The trainer's log folder goes to a throw-away nnUNet_results; nothing is written to the user's results.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pydoc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence
from unittest import mock

import torch

STOCK_TRAINER = "nnUNetTrainer"
DEFAULT_PLANS = "nnUNetPlans"
RESENC_M_PLANS = "nnUNetResEncUNetMPlans"
MAMBAHOME_TRAINER = "nnUNetTrainerMambaHoME"


class SpeedInputError(ValueError):
    """The dataset, plans or setups asked for cannot be benchmarked."""


@dataclass(frozen=True)
class Setup:
    """One compared training setup."""

    trainer: str
    plans: str

    @property
    def label(self) -> str:
        return f"{self.trainer}__{self.plans}"


@dataclass(frozen=True)
class Workload:
    """What every setup runs: same dataset, configuration, device, patch and batch size, torch CPU threads."""

    dataset_dir: str
    configuration: str
    device: str
    patch_size: tuple[int, ...]
    batch_size: int
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default

    def apply_threads(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Workload":
        d = json.loads(text)
        return cls(d["dataset_dir"], d["configuration"], d["device"], tuple(d["patch_size"]), int(d["batch_size"]),
                   int(d["threads"]))


def dataset_dir(dataset: str) -> Path:
    """$nnUNet_preprocessed/DatasetXXX_Name for a dataset id or name."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if not nnUNet_preprocessed.is_set():
        raise SpeedInputError("nnUNet_preprocessed is not set")
    try:
        name = maybe_convert_to_dataset_name(dataset if dataset.startswith("Dataset") else int(dataset))
    except (RuntimeError, ValueError) as exc:
        raise SpeedInputError(f"dataset {dataset!r}: {exc}") from exc
    folder = Path(nnUNet_preprocessed.get()) / name
    if not (folder / "dataset.json").is_file():
        raise SpeedInputError(f"{folder / 'dataset.json'} not found; run nnUNetv2_plan_and_preprocess first")
    return folder


def default_setups(folder: Path) -> list[Setup]:
    """Stock nnU-Net (default plans), stock nnU-Net with ResEnc M plans when present, and nnUNetTrainerMambaHoME."""
    setups = [Setup(STOCK_TRAINER, DEFAULT_PLANS)]
    if (folder / f"{RESENC_M_PLANS}.json").is_file():
        setups.append(Setup(STOCK_TRAINER, RESENC_M_PLANS))
    return setups + [Setup(MAMBAHOME_TRAINER, DEFAULT_PLANS)]


def pair_setups(trainers: Optional[Sequence[str]], plans: Optional[Sequence[str]], folder: Path) -> list[Setup]:
    """Setups from `-tr`/`-p`: pairwise, one plans for all trainers, or the defaults when neither is given."""
    if not trainers:
        if plans:
            raise SpeedInputError("-p needs -tr (the trainers to pair the plans with)")
        return default_setups(folder)
    plans = list(plans or [DEFAULT_PLANS])
    if len(plans) == 1:
        plans *= len(trainers)
    if len(plans) != len(trainers):
        raise SpeedInputError(f"give one -p for all trainers or one per trainer; got {len(trainers)} -tr, {len(plans)} -p")
    setups = [Setup(t, p) for t, p in zip(trainers, plans)]
    if len(set(setups)) != len(setups):
        raise SpeedInputError("each (trainer, plans) pair may appear only once")
    return setups


def load_plans(folder: Path, plans: str) -> dict:
    path = folder / f"{plans}.json"
    if not path.is_file():
        raise SpeedInputError(f"plans file {path} not found")
    return json.loads(path.read_text())


def configuration_defaults(folder: Path, setup: Setup, configuration: str) -> tuple[tuple[int, ...], int]:
    """Patch and batch size the plans give a configuration."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = load_plans(folder, setup.plans)
    if configuration not in plans["configurations"]:
        raise SpeedInputError(f"{setup.plans} has no configuration {configuration!r}; "
                              f"it has {sorted(plans['configurations'])}")
    cm = PlansManager(plans).get_configuration(configuration)
    return tuple(int(p) for p in cm.patch_size), int(cm.batch_size)


def find_trainer_class(name: str) -> type:
    """This plugin's trainer of that name, else nnU-Net's lookup by class name (stock trainers and the user's
    nnUNet_extTrainer directories, with ours added).

    Ours are taken from `nnunetv2_mambahome.training` directly: on the H200 machine (Python 3.12, package on
    PYTHONPATH) nnU-Net's directory scan skipped our ext-trainer module inside `benchmark speed` although the
    same lookup found it in a fresh interpreter (docs/BENCHMARKS.md); the classes are the same either way."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunetv2_mambahome import training
    from nnunetv2_mambahome.trainer_path import trainer_dir

    ours = getattr(training, name, None)
    if isinstance(ours, type):
        return ours

    paths = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p.strip()]
    with _environ(nnUNet_extTrainer=os.pathsep.join([*paths, trainer_dir()])), _quiet():
        try:
            return recursive_find_trainer_class_by_name(name)
        except RuntimeError as exc:
            raise SpeedInputError(f"trainer {name!r} not found in nnU-Net or nnUNet_extTrainer") from exc


def import_network_class(folder: Path, setup: Setup, configuration: str) -> None:
    """Import the plans' network class now, so that a memory baseline taken afterwards excludes its code."""
    arch = load_plans(folder, setup.plans)["configurations"][configuration].get("architecture", {})
    if "network_class_name" in arch:
        pydoc.locate(arch["network_class_name"])


def build_trainer(setup: Setup, workload: Workload, results_dir: Path):
    """An initialised trainer of `setup` for `workload` (network, optimizer, loss, grad scaler as in training).

    The plans' patch and batch size are replaced by the workload's. Initialisation also asks nnU-Net which
    dataset class the preprocessed data use; where no data were preprocessed yet (plans only), that answer
    is irrelevant to a benchmark without data loading, so it is skipped.
    """
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as trainer_module

    folder = Path(workload.dataset_dir)
    plans = load_plans(folder, setup.plans)
    if workload.configuration not in plans["configurations"]:
        raise SpeedInputError(f"{setup.plans} has no configuration {workload.configuration!r}")
    config = plans["configurations"][workload.configuration]
    config["patch_size"], config["batch_size"] = list(workload.patch_size), workload.batch_size
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_mambahome.nets.plans_encoder import check_patch_size

    # every network (not only ours) needs a patch its pooling divides; say so before a shape error in forward
    check_patch_size(workload.patch_size,
                     PlansManager(plans).get_configuration(workload.configuration).pool_op_kernel_sizes)
    plans["continue_training"] = False
    dataset_json = json.loads((folder / "dataset.json").read_text())
    trainer_class = find_trainer_class(setup.trainer)
    with _environ(nnUNet_results=str(results_dir), nnUNet_preprocessed=str(folder.parent)), _quiet():
        trainer = trainer_class(plans, workload.configuration, 0, dataset_json, torch.device(workload.device))
        data_folder = Path(trainer.preprocessed_dataset_folder)
        has_data = data_folder.is_dir() and any(p.suffix not in (".pkl", ".npy") for p in data_folder.iterdir())
        skip = contextlib.nullcontext() if has_data else mock.patch.object(
            trainer_module, "infer_dataset_class", lambda folder: None)
        with skip:
            trainer.initialize()
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets inference mirroring axes
    trainer.network.train()
    return trainer


def random_batch(trainer, seed: int = 0) -> dict:
    """A fixed random batch shaped like the trainer's, as nnUNetTrainerBenchmark_5epochs_noDataLoading makes it.

    The same seed gives every setup the same input image; targets follow each setup's deep-supervision scales.
    """
    gen = torch.Generator().manual_seed(seed)
    patch = list(trainer.configuration_manager.patch_size)
    data = torch.rand((trainer.batch_size, trainer.num_input_channels, *patch), generator=gen)
    max_label = max(trainer.label_manager.all_labels)
    target = [torch.round(torch.rand((trainer.batch_size, 1, *[int(i * j) for i, j in zip(patch, k)]),
                                     generator=gen) * max_label)
              for k in trainer._get_deep_supervision_scales()]
    device = trainer.device
    return {"data": data.to(device), "target": [t.to(device) for t in target]}


def unwrapped_network(trainer) -> torch.nn.Module:
    """The trainer's network without a torch.compile wrapper."""
    return getattr(trainer.network, "_orig_mod", trainer.network)


def parameter_count(trainer) -> int:
    return sum(p.numel() for p in unwrapped_network(trainer).parameters())


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence nnU-Net's console chatter (citation banner, device lines, lookup messages)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
