"""`benchmark speed`: training-step time, peak memory, parameters and inference time against stock nnU-Net.

Every setup (trainer + plans) is an nnU-Net trainer initialised as `nnUNetv2_train` would, fed one fixed random
batch (no data loading, like nnU-Net's nnUNetTrainerBenchmark_5epochs_noDataLoading) through its own
`train_step` (autocast + GradScaler on CUDA). All setups run the same patch and batch size (default: those of
the reference setup's plans), alternating iteration by iteration. Ratios are against the first stock
`nnUNetTrainer` setup (else the first setup) of the same run.
"""
from __future__ import annotations

import argparse
import datetime
import socket
import sys
import tempfile
from pathlib import Path

import torch

from ..settings import EXIT_BAD_INPUT, InputError, check_device, check_environment
from .speed_measure import (gpu_busy_ms, inference_seconds, inference_volume, median, peak_memory_mib,
                            time_round_robin, train_step_seconds)
from .speed_report import SetupResult, add_ratios, write_speed_report
from .speed_setup import (STOCK_TRAINER, Setup, SpeedInputError, Workload, build_trainer, configuration_defaults,
                          dataset_dir, load_plans, pair_setups, parameter_count, random_batch,
                          unwrapped_network)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `nnunetv2-mambahome benchmark speed`."""
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name in $nnUNet_preprocessed")
    parser.add_argument("-c", "--configuration", default="3d_fullres", help="nnU-Net configuration (default 3d_fullres)")
    parser.add_argument("-tr", "--trainers", nargs="+", metavar="TRAINER",
                        help="trainer class names (default: nnUNetTrainer, its ResEnc M plans if present, "
                             "nnUNetTrainerMambaHoME)")
    parser.add_argument("-p", "--plans", nargs="+", metavar="PLANS",
                        help="plans identifiers, one for all trainers or one per trainer (default nnUNetPlans)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--iters", type=int, default=20, help="timed training iterations per setup (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed warm-up iterations per setup (default 5)")
    parser.add_argument("--patch-size", type=int, nargs="+", metavar="N",
                        help="patch size for all setups (default: the reference setup's plans)")
    parser.add_argument("--batch-size", type=int, metavar="B",
                        help="batch size for all setups (default: the reference setup's plans)")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="torch CPU threads (default: torch's default); 1 gives steadier CPU figures on a busy "
                             "machine, where OpenMP threads of many small ops wait on each other")
    inference = parser.add_mutually_exclusive_group()
    inference.add_argument("--inference-case", metavar="CASE",
                           help="preprocessed case to time sliding-window inference on (default: a random volume)")
    inference.add_argument("--inference-shape", type=int, nargs="+", metavar="N",
                           help="shape of the random inference volume (default: the plans' median image size)")
    inference.add_argument("--no-inference", action="store_true", help="skip the inference timing")
    parser.add_argument("--inference-repeats", type=int, default=2,
                        help="timed inference runs per setup, after one warm-up run (default 2)")
    parser.add_argument("--out", type=Path, default=Path("mambahome_speed_report"), metavar="DIR",
                        help="report folder (default ./mambahome_speed_report)")


def run(args: argparse.Namespace) -> int:
    """Benchmark the setups and write the report to --out; 0 on success, 2 on input errors."""
    try:
        folder = dataset_dir(args.dataset)
        setups = pair_setups(args.trainers, args.plans, folder)
        _check_counts(args)
        reference = next((s for s in setups if s.trainer == STOCK_TRAINER), setups[0])
        workload = _workload(args, folder, reference)
        _check_inference_input(args, folder, setups[0], workload)
        print(f"benchmark speed: {folder.name} {workload.configuration} on {workload.device}, patch "
              f"{list(workload.patch_size)}, batch {workload.batch_size}; reference {reference.label}")
        workload.apply_threads()
        results = measure_setups(setups, workload, args)
    except (SpeedInputError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    ref = next(r for r in results if r.label == reference.label)
    add_ratios(results, ref)
    md = write_speed_report(args.out, results, ref, _meta(args, folder, workload))
    print(md.read_text())
    print(f"wrote {md}, speed.csv, speed.json and the ratio charts to {args.out}")
    return 0


def measure_setups(setups: list[Setup], workload: Workload, args: argparse.Namespace) -> list[SetupResult]:
    """Build every setup, time them alternating, then peak memory and inference per setup."""
    if workload.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # as nnUNetv2_train sets it
    with tempfile.TemporaryDirectory(prefix="mambahome_speed_") as results_dir:
        trainers = {}
        for s in setups:
            print(f"building {s.label}")
            try:
                trainers[s.label] = build_trainer(s, workload, Path(results_dir))
            except ValueError as exc:  # SpeedInputError, plans a network cannot be built from
                raise SpeedInputError(f"could not build {s.label}: {exc}") from exc
            print(f"  {type(unwrapped_network(trainers[s.label])).__name__}, {parameter_count(trainers[s.label]) / 1e6:.2f}M "
                  "parameters")
        batches = {label: random_batch(t) for label, t in trainers.items()}
        print(f"timing {args.warmup} warm-up + {args.iters} iterations, alternating")
        steps = {label: (lambda t=t, b=batches[label]: train_step_seconds(t, b)) for label, t in trainers.items()}
        times, warmups = time_round_robin(steps, args.warmup, args.iters)
        busy = {}
        if workload.device.startswith("cuda"):
            print("profiling GPU-busy time (3 steps per setup)")
            for label, t in trainers.items():
                busy[label] = gpu_busy_ms(lambda t=t, b=batches[label]: t.train_step(b))
                print(f"  {label}: {busy[label]:.1f} ms busy per step")
        del batches
        inference = {label: [] for label in trainers}
        inference_first = {}
        if not args.no_inference:
            volume = inference_volume(next(iter(trainers.values())), args.inference_case, args.inference_shape)
            print(f"timing sliding-window inference on a {'x'.join(map(str, volume.shape[1:]))} volume: one warm-up "
                  f"run (compilation, graph capture) and {args.inference_repeats} timed per setup, alternating")
            for label, t in trainers.items():
                inference_first[label] = inference_seconds(t, volume, 1)[0]
                print(f"  warm-up {label}: {inference_first[label]:.2f} s")
            for r in range(args.inference_repeats):
                for label, t in trainers.items():
                    inference[label] += inference_seconds(t, volume, 1)
                    print(f"  {label}: {inference[label][-1]:.3f} s")
        results = [SetupResult(label=s.label, trainer=s.trainer, plans=s.plans,
                               network=type(unwrapped_network(trainers[s.label])).__name__,
                               parameters=parameter_count(trainers[s.label]),
                               compiled=unwrapped_network(trainers[s.label]) is not trainers[s.label].network,
                               step_seconds=times[s.label], median_ms=median(times[s.label]) * 1e3,
                               warmup_seconds=warmups[s.label], gpu_busy_ms=busy.get(s.label),
                               peak_memory_mib=0.0, memory_kind="", inference_seconds=inference[s.label],
                               inference_median_s=median(inference[s.label]) if inference[s.label] else None,
                               inference_first_s=inference_first.get(s.label))
                   for s in setups]
        del trainers
    for s, r in zip(setups, results):
        print(f"peak memory of {s.label} (fresh process)")
        mem = peak_memory_mib(s, workload)
        r.peak_memory_mib, r.memory_kind = mem["peak_mib"], mem["kind"]
        r.peak_reserved_mib = mem.get("peak_reserved_mib")
        print(f"  {r.peak_memory_mib:.0f} MiB" + (f" allocated, {r.peak_reserved_mib:.0f} MiB reserved"
                                                  if r.peak_reserved_mib is not None else ""))
    return results


def _check_counts(args: argparse.Namespace) -> None:
    if args.iters < 1 or args.warmup < 0 or args.inference_repeats < 1:
        raise SpeedInputError("--iters and --inference-repeats must be >= 1, --warmup >= 0")
    if args.threads < 0:
        raise SpeedInputError("--threads must be >= 0")
    if args.batch_size is not None and args.batch_size < 1:
        raise SpeedInputError("--batch-size must be >= 1")


def _workload(args: argparse.Namespace, folder: Path, reference: Setup) -> Workload:
    patch, batch = configuration_defaults(folder, reference, args.configuration)
    if args.patch_size:
        if len(args.patch_size) != len(patch):
            raise SpeedInputError(f"--patch-size needs {len(patch)} numbers for {args.configuration}")
        patch = tuple(args.patch_size)
    device = check_device(args.device)
    check_environment(device)  # NNUNETV2_MAMBAHOME_* as the trainers check them, before any setup is built
    return Workload(str(folder), args.configuration, args.device, patch, args.batch_size or batch, args.threads)


def _check_inference_input(args: argparse.Namespace, folder: Path, first: Setup, workload: Workload) -> None:
    """--inference-shape has the patch's rank, --inference-case is a preprocessed case of the first setup's
    plans (the volume every setup is timed on): checked before any timing, not after it."""
    if args.no_inference:
        return
    rank = len(workload.patch_size)
    if args.inference_shape is not None and (len(args.inference_shape) != rank or min(args.inference_shape) < 1):
        raise SpeedInputError(f"--inference-shape {' '.join(map(str, args.inference_shape))} is not allowed: give "
                              f"{rank} positive sizes for {workload.configuration}, e.g. "
                              f"{' '.join(map(str, workload.patch_size))}")
    if args.inference_case is not None:
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        plans = PlansManager(load_plans(folder, first.plans))
        data = folder / plans.get_configuration(workload.configuration).data_identifier
        try:
            cases = sorted(infer_dataset_class(str(data)).get_identifiers(str(data)))
        except (AssertionError, KeyError, OSError):  # no folder, or no files nnU-Net recognises
            cases = []
        if args.inference_case not in cases:
            shown = ", ".join(cases[:5]) + (", ..." if len(cases) > 5 else "") if cases else "none"
            raise SpeedInputError(f"--inference-case {args.inference_case!r} is not a preprocessed case in {data} "
                                  f"(cases: {shown}); run nnUNetv2_plan_and_preprocess, or use --inference-shape")


def _meta(args: argparse.Namespace, folder: Path, workload: Workload) -> dict:
    import nnunetv2
    from importlib.metadata import version

    cuda = workload.device.startswith("cuda")
    return {
        "dataset": folder.name,
        "mambahome_scan_backend": _scan_backend(torch.device(workload.device)),
        "device_name": torch.cuda.get_device_name() if cuda else f"CPU, torch threads: {torch.get_num_threads()}",
        "hostname": socket.gethostname(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
                     "cudnn": torch.backends.cudnn.version() if cuda else None,
                     "nnunetv2": getattr(nnunetv2, "__version__", None) or version("nnunetv2"),
                     "python": sys.version.split()[0]},
        "settings": {"configuration": workload.configuration, "device": workload.device,
                     "patch_size": list(workload.patch_size), "batch_size": workload.batch_size,
                     "iters": args.iters, "warmup": args.warmup, "inference_repeats": args.inference_repeats,
                     "torch_threads": torch.get_num_threads(),
                     "inference_input": None if args.no_inference else (
                         f"preprocessed case {args.inference_case}" if args.inference_case else
                         f"random volume {'x'.join(map(str, args.inference_shape))}" if args.inference_shape else
                         "random volume of the plans' median image size")},
    }


def _scan_backend(device: torch.device) -> str:
    """Which selective-scan backend the Mamba-HoME setups ran on, and why."""
    from nnunetv2_mambahome.ops import ENV_VAR, explain_auto_choice, requested_backend

    choice = requested_backend()
    return explain_auto_choice(device) if choice == "auto" else f"{choice} (forced by {ENV_VAR})"
