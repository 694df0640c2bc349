"""`nnunetv2-mambahome make-dataset brain|abdomen`: write an offline real-data nnU-Net raw dataset."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nnunetv2_mambahome.settings import EXIT_BAD_INPUT

# kind -> defaults (dataset id, name, train cases, test cases, spacing in mm)
DEFAULTS = {
    "brain": dict(dataset_id=501, name="MambaHoMEBrain", num_train=8, num_test=3, spacing=1.5),
    "abdomen": dict(dataset_id=502, name="MambaHoMEAbdomen", num_train=8, num_test=2, spacing=3.0),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the make-dataset options on `parser`."""
    parser.add_argument("kind", choices=sorted(DEFAULTS),
                        help="brain: MNI ch2 T1 + AAL grouped into 8 classes; abdomen: TotalSegmentator reference "
                             "CT + MR with 9 shared organs")
    parser.add_argument("--dataset-id", type=int, help="nnU-Net dataset id (default: 501 brain, 502 abdomen)")
    parser.add_argument("--name", help="dataset name (default: MambaHoMEBrain / MambaHoMEAbdomen)")
    parser.add_argument("--num-train", type=int, help="training cases (default: 8)")
    parser.add_argument("--num-test", type=int, help="held-out test cases (default: 3 brain, 2 abdomen)")
    parser.add_argument("--spacing", type=float, help="isotropic output spacing in mm (default: 1.5 brain, 3.0 abdomen)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; case seeds are derived from it (default: 0)")
    parser.add_argument("--raw-dir", help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing dataset folder")


def _summary(folder: Path) -> str:
    import nibabel as nib

    info = json.loads((folder / "dataset.json").read_text())
    lines = [f"Wrote {folder}",
             f"  classes ({len(info['labels'])}): " + ", ".join(f"{v}={k}" for k, v in info["labels"].items()),
             f"  channel 0: {info['channel_names']['0']}, spacing {info['mambahome']['spacing']} mm"]
    for split in ("Tr", "Ts"):
        images = sorted((folder / f"images{split}").glob("*_0000.nii.gz"))
        shapes = sorted({nib.load(str(p)).shape for p in images})
        lines.append(f"  images{split}: {len(images)} cases, shapes {', '.join(map(str, shapes))}")
    lines.append("  labelsTs: held-out test labels for evaluation (nnU-Net itself ignores this folder)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Build the requested dataset; prints where it went and a summary. Exit code 0, 2 for bad input (also an
    existing dataset without --force, a spacing too coarse to plan on), 1 when a source cannot be fetched."""
    options = dict(DEFAULTS[args.kind])
    options.update({k: getattr(args, k) for k in options if getattr(args, k) is not None})
    options.update(seed=args.seed, raw_dir=args.raw_dir, force=args.force)
    if options["num_train"] < 1 or options["num_test"] < 0 or not options["spacing"] > 0:
        print("error: need --num-train >= 1, --num-test >= 0 and --spacing > 0", file=sys.stderr)
        return EXIT_BAD_INPUT
    from nnunetv2_mambahome.datasets import abdomen, brain, nnunet_raw, sources

    build = brain.build_brain_dataset if args.kind == "brain" else abdomen.build_abdomen_dataset
    try:
        folder = build(**options)
    except sources.SourceFetchError as e:  # the machine, not the input: exit 1
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (nnunet_raw.DatasetExistsError, ValueError) as e:  # bad input, checked before anything is written
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(_summary(folder))
    return 0
