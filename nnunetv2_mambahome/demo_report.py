"""`nnunetv2-mambahome demo-report`: Dice per class on held-out cases, against an untrained network, with pictures.

The untrained baseline is the same trainer's network with its initial (seeded) weights, run through the
same nnU-Net predictor, so the comparison isolates what training learned. Figures show, per case, one
axial and one coronal slice: image, ground truth overlay, prediction overlay.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .benchmark.report import markdown_table
from .metrics import dice
from .settings import InputError, check_device


def find_trainer(name: str) -> type:
    """nnU-Net's trainer class `name` (searched as nnUNetv2_train does); InputError if there is none."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        return recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        raise InputError(f"-tr {name}: no such trainer in nnU-Net or nnUNet_extTrainer "
                         "(export nnUNet_extTrainer=$(nnunetv2-mambahome trainer-path))") from None


def predict_untrained(dataset: str, trainer: type, images: Path, out: Path, device: str, seed: int = 0) -> None:
    """Run nnU-Net's predictor with the trainer's freshly initialised network (the 'untrained' baseline).

    Progress: nnU-Net's per-case lines and its sliding-window progress bar (stderr)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(nnUNet_preprocessed) / maybe_convert_to_dataset_name(dataset)
    plans_manager = PlansManager(str(folder / "nnUNetPlans.json"))
    dataset_json = json.loads((folder / "dataset.json").read_text())
    cm = plans_manager.get_configuration("3d_fullres")
    torch.manual_seed(seed)
    net = trainer.build_network_architecture(plans_manager, cm,
                                             determine_num_input_channels(plans_manager, cm, dataset_json),
                                             plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
                                             enable_deep_supervision=False)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                device=torch.device(device), verbose=False, allow_tqdm=True)
    predictor.manual_initialization(net, plans_manager, cm, [net.state_dict()], dataset_json, trainer.__name__, None)
    predictor.predict_from_files(str(images), str(out), save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def per_class_dice(pred_dir: Path, ref_dir: Path, labels: dict[str, int]) -> dict[str, dict[str, float]]:
    """{case: {class name: Dice}} over every reference in ref_dir."""
    out = {}
    for ref_path in sorted(ref_dir.glob("*.nii.gz")):
        case = ref_path.name[: -len(".nii.gz")]
        pred, ref = _read(pred_dir / ref_path.name), _read(ref_path)
        out[case] = {name: dice(pred == value, ref == value) for name, value in labels.items() if value != 0}
    return out


def save_overlay(path: Path, image: np.ndarray, ref: np.ndarray, pred: np.ndarray, title: str, n_classes: int) -> None:
    """Axial and coronal middle slices: image | ground truth | prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10", max(n_classes, 2))
    fig, axes = plt.subplots(2, 3, figsize=(10, 7))
    for row, take in enumerate((lambda a: a[a.shape[0] // 2], lambda a: np.flipud(a[:, a.shape[1] // 2]))):
        img = take(image)
        for col, (lab, name) in enumerate(((None, "image"), (take(ref), "ground truth"), (take(pred), "prediction"))):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray")
            if lab is not None:
                ax.imshow(np.ma.masked_equal(lab, 0), cmap=cmap, vmin=0, vmax=max(n_classes - 1, 1), alpha=0.5,
                          interpolation="nearest")
            ax.set_title(f"{name} ({'axial' if row == 0 else 'coronal'})", fontsize=9)
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(raw: Path, pred: Path, untrained: Path, out: Path, trainer: str, wall_time_s: float | None) -> Path:
    """Write report.md and overlay PNGs into `out`; returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    trained = per_class_dice(pred, raw / "labelsTs", labels)
    baseline = per_class_dice(untrained, raw / "labelsTs", labels)
    classes = [n for n, v in labels.items() if v != 0]
    rows = []
    for name in classes:
        t = [trained[c][name] for c in trained]
        b = [baseline[c][name] for c in baseline]
        rows.append([name, f"{np.mean(t):.3f} ± {np.std(t):.3f}", f"{np.mean(b):.3f} ± {np.std(b):.3f}"])
    mean_t = np.mean([np.mean(list(v.values())) for v in trained.values()])
    mean_b = np.mean([np.mean(list(v.values())) for v in baseline.values()])
    rows.append(["**mean**", f"**{mean_t:.3f}**", f"**{mean_b:.3f}**"])
    figures = []
    for case in trained:
        png = out / f"{case}.png"
        save_overlay(png, _read(raw / "imagesTs" / f"{case}_0000.nii.gz"), _read(raw / "labelsTs" / f"{case}.nii.gz"),
                     _read(pred / f"{case}.nii.gz"), f"{case}: mean Dice {np.mean(list(trained[case].values())):.3f}",
                     len(labels))
        figures.append(f"![{case}]({png.name})")
    case_rows = [[c] + [f"{trained[c][n]:.3f}" for n in classes] for c in trained]
    text = [f"# Mamba-HoME demo report ({raw.name})", "",
            f"Trainer `{trainer}`, fold 0; {len(trained)} held-out cases (`imagesTs`, deformations drawn with seeds "
            "disjoint from training). Untrained = the same network with its initial weights, same predictor.", ""]
    if wall_time_s is not None:
        text += [f"Demo wall time: {wall_time_s / 60:.1f} min.", ""]
    text += ["## Dice per class (mean ± std over held-out cases)", "",
             markdown_table(["class", "trained", "untrained"], rows), "", "## Dice per case", "",
             markdown_table(["case"] + classes, case_rows), "", "## Overlays (axial and coronal middle slices)", "",
             *figures, ""]
    report = out / "report.md"
    report.write_text("\n".join(text))
    (out / "dice.json").write_text(json.dumps({"trained": trained, "untrained": baseline}, indent=2))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    parser.add_argument("--pred", required=True, type=Path, help="folder of nnUNetv2_predict outputs for imagesTs")
    parser.add_argument("-tr", "--trainer", required=True, help="trainer used for training (for the baseline)")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--started", type=float, default=None, help="unix time the demo started (for wall time)")


def check_inputs(dataset: str, pred: Path) -> Path:
    """The raw dataset folder, once everything the report reads exists (before the untrained network predicts):
    nnUNet_raw/<dataset> with imagesTs, labelsTs and dataset.json, the plans, and a prediction per test case."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    for var in ("nnUNet_raw", "nnUNet_preprocessed"):
        if not os.environ.get(var):
            raise InputError(f"{var} is not set: export {var}=/path/to/{var}")
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"-d {dataset}: {str(exc).split('. ')[0]}") from None
    raw = Path(os.environ["nnUNet_raw"]) / name
    plans = Path(os.environ["nnUNet_preprocessed"]) / name / "nnUNetPlans.json"
    for path in (raw / "dataset.json", raw / "imagesTs", plans):
        if not path.exists():
            raise InputError(f"{path} not found: the report needs the raw dataset with its held-out imagesTs/labelsTs "
                             "and nnUNetv2_plan_and_preprocess run on it")
    cases = sorted(p.name for p in (raw / "labelsTs").glob("*.nii.gz"))
    if not cases:
        raise InputError(f"no held-out labels (*.nii.gz) in {raw / 'labelsTs'}: the report compares predictions "
                         "with them")
    if not pred.is_dir():
        raise InputError(f"--pred {pred}: folder not found (nnUNetv2_predict -i {raw / 'imagesTs'} -o {pred} ...)")
    missing = [c for c in cases if not (pred / c).is_file()]
    if missing:
        raise InputError(f"--pred {pred} has no prediction for {len(missing)} of {len(cases)} held-out case(s) "
                         f"(e.g. {missing[0]}); predict imagesTs into it first")
    return raw


def run(args: argparse.Namespace) -> int:
    check_device(args.device)
    raw = check_inputs(args.dataset, args.pred)
    trainer = find_trainer(args.trainer)
    untrained = args.out / "untrained_predictions"
    n_cases = len(list((raw / "imagesTs").glob("*_0000*")))
    print(f"[demo-report] predicting {n_cases} held-out case(s) with the untrained network -> {untrained}", flush=True)
    predict_untrained(args.dataset, trainer, raw / "imagesTs", untrained, args.device)
    wall = time.time() - args.started if args.started else None
    report = write_report(raw, args.pred, untrained, args.out, args.trainer, wall)
    print(report.read_text())
    print(f"[demo-report] report: {report}")
    return 0
