"""Example: Mamba-HoME from Python: build a network from nnU-Net plans, then predict a folder with nnUNetPredictor.

Shows `nnunetv2_mambahome.register()` (the Python form of the discovery line: nnU-Net looks the trainer up by
the name stored in the checkpoint), the trainer's `build_network_architecture` (the network its plans
describe, exactly as nnU-Net builds it for training and prediction, e.g. to embed it elsewhere) and nnU-Net's own predictor on a trained model folder.
    usage: python examples/python_api.py MODEL_FOLDER INPUT_FOLDER OUTPUT_FOLDER [--fold 0] [--device cpu]
MODEL_FOLDER is nnUNet_results/<Dataset>/<Trainer>__<Plans>__<configuration> of one of our MambaHoMEUNet
trainers; INPUT_FOLDER holds nnU-Net inputs (<case>_0000.nii.gz, ...).
"""
import argparse
import json
from pathlib import Path

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

import nnunetv2_mambahome


def build_network(model_folder: Path) -> torch.nn.Module:
    """The (untrained) network of a model folder: what its trainer builds from its plans and configuration."""
    trainer_name, _, configuration = model_folder.name.split("__")
    trainer = recursive_find_trainer_class_by_name(trainer_name)  # found via register()
    plans_manager = PlansManager(str(model_folder / "plans.json"))
    dataset_json = json.loads((model_folder / "dataset.json").read_text())
    cm = plans_manager.get_configuration(configuration)
    channels = determine_num_input_channels(plans_manager, cm, dataset_json)
    heads = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    return trainer.build_network_architecture(plans_manager, cm, channels, heads, enable_deep_supervision=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_folder", type=Path)
    parser.add_argument("input_folder", type=Path)
    parser.add_argument("output_folder", type=Path)
    parser.add_argument("--fold", default="0", help="fold to use (or 'all')")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    nnunetv2_mambahome.register()  # prepend our trainer directory to nnUNet_extTrainer in this process
    net = build_network(args.model_folder)
    print(f"{type(net).__name__} built from {args.model_folder / 'plans.json'}: "
          f"{sum(p.numel() for p in net.parameters()):,} parameters")

    predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=True, device=torch.device(args.device))
    predictor.initialize_from_trained_model_folder(str(args.model_folder), use_folds=(args.fold,))
    predictor.predict_from_files(str(args.input_folder), str(args.output_folder), save_probabilities=False,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)
    print(f"predictions in {args.output_folder}")


if __name__ == "__main__":
    main()
