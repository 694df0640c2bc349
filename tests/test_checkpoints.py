"""Nothing is lost (issue 17, case 4): checkpoints survive an interrupted save, and -pretrained_weights files that
are not nnU-Net checkpoints get one clear line, or load when they are a state_dict of the same network."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bad_input_helpers import build, snapshot, write_preprocessed
from nnunetv2_mambahome.training.pretrained import PretrainedWeightsError

REPO = Path(__file__).resolve().parents[1]
OURS, STOCK = "nnUNetTrainerMambaHoMELight", "nnUNetTrainer"


@pytest.fixture(scope="module")
def trainers(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ckpt")
    write_preprocessed(root / "pre")
    return {name: build(name, root / "pre", root / "results") for name in (OURS, STOCK)}


def _half_written_save(real_save, exception: type[BaseException]):
    """A torch.save that writes half of the real bytes into the file, then is interrupted."""
    def save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        with open(f, "wb") as out:
            out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise exception("interrupted mid-save")
    return save


@pytest.mark.parametrize("trainer_name, survives", [(OURS, True), (STOCK, False)], ids=["ours", "stock nnU-Net"])
def test_interrupted_save_keeps_the_previous_checkpoint(trainers, tmp_path, monkeypatch, trainer_name, survives):
    """Ours replace the file atomically; nnU-Net's own trainer (in place) shows what that prevents."""
    trainer = trainers[trainer_name]
    path = tmp_path / "checkpoint_latest.pth"
    trainer.current_epoch = 3
    trainer.save_checkpoint(str(path))
    monkeypatch.setattr(torch, "save", _half_written_save(torch.save, KeyboardInterrupt))
    trainer.current_epoch = 7
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(str(path))
    monkeypatch.undo()
    if not survives:
        with pytest.raises(Exception):
            torch.load(path, weights_only=False)
        return
    assert torch.load(path, weights_only=False)["current_epoch"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_latest.pth"]  # no partial file left


CHILD = textwrap.dedent("""
    import signal, sys, time, torch, io
    # a process started in the background inherits SIGINT ignored; Ctrl-C in a terminal is the case tested here
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from pathlib import Path
    from bad_input_helpers import build
    root, path = Path(sys.argv[1]), sys.argv[2]
    trainer = build("nnUNetTrainerMambaHoMELight", root / "pre", root / "results")
    trainer.current_epoch = 3
    trainer.save_checkpoint(path)
    real_save = torch.save
    def slow_save(obj, f, *a, **k):
        buffer = io.BytesIO(); real_save(obj, buffer)
        with open(f, "wb") as out:
            out.write(buffer.getvalue()[:1000]); out.flush()
            print("MID-SAVE", flush=True)
            time.sleep(120)
            out.write(buffer.getvalue()[1000:])
    torch.save = slow_save
    trainer.current_epoch = 7
    trainer.save_checkpoint(path)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_save_leaves_a_checkpoint_that_resumes(trainers, tmp_path, sig) -> None:
    """A real process killed while torch.save is writing: the previous checkpoint loads, as `--c` would load it."""
    write_preprocessed(tmp_path / "pre")
    path = tmp_path / "checkpoint_latest.pth"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in child.stdout:
            if line.strip() == "MID-SAVE":
                break
        else:
            pytest.fail(f"the child never reached the second save: {child.stderr.read()[-2000:]}")
        child.send_signal(sig)
        child.wait(timeout=60)
    finally:
        child.kill()
    assert child.returncode != 0
    trainer = trainers[OURS]
    trainer.load_checkpoint(str(path))  # what nnUNetv2_train --c does with checkpoint_latest.pth
    assert trainer.current_epoch == 4
    partial = tmp_path / ".checkpoint_latest.pth.partial"
    assert partial.exists() == (sig == signal.SIGKILL)  # SIGINT cleans up; SIGKILL cannot, the next save reuses it
    trainer.save_checkpoint(str(path))
    assert not partial.exists() and torch.load(path, weights_only=False)["current_epoch"] == 5


# ------------------------------------------------------------------------------------------------ -pretrained_weights

def _bad_files(tmp_path: Path, trainers: dict) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n")
    truncated = tmp_path / "truncated.pth"
    buffer = io.BytesIO()
    torch.save({"network_weights": trainers[OURS].network.state_dict()}, buffer)
    truncated.write_bytes(buffer.getvalue()[:500])
    no_tensors = tmp_path / "no_tensors.pth"
    torch.save({"epoch": 3, "notes": "x"}, no_tensors)
    other_net = tmp_path / "other_net.pth"
    torch.save(trainers[STOCK].network.state_dict(), other_net)
    a_list = tmp_path / "a_list.pth"
    torch.save([1, 2], a_list)
    return {
        "plain text": (text, "is not a PyTorch checkpoint (UnpicklingError"),
        "truncated": (truncated, "is not a PyTorch checkpoint"),
        "dict without tensors": (no_tensors, "holds a dict with keys [epoch, notes] but neither 'network_weights'"),
        "state_dict of another network": (other_net, "does not fit MambaHoMEUNet"),
        "not a dict": (a_list, "holds a list, not a checkpoint dict"),
        "missing file": (tmp_path / "nope.pth", "nope.pth: no such file"),
    }


BAD = ["plain text", "truncated", "dict without tensors", "state_dict of another network", "not a dict", "missing file"]


@pytest.mark.parametrize("case", BAD)
def test_pretrained_weights_that_cannot_load_are_one_clear_line(trainers, tmp_path, case) -> None:
    from nnunetv2.run.run_training import maybe_load_checkpoint

    path, fragment = _bad_files(tmp_path, trainers)[case]
    trainer = trainers[OURS]
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    files = snapshot(tmp_path)
    with pytest.raises(PretrainedWeightsError) as exc:
        maybe_load_checkpoint(trainer, False, False, str(path))  # nnUNetv2_train -pretrained_weights PATH
    message = str(exc.value)
    assert fragment in message and "\n" not in message, message
    assert all(torch.equal(v, before[k]) for k, v in trainer.network.state_dict().items())  # network untouched
    assert snapshot(tmp_path) == files


@pytest.mark.parametrize("wrap", ["bare state_dict", "under 'model'", "nnU-Net checkpoint"])
def test_pretrained_weights_of_the_same_network_load_except_the_head(trainers, tmp_path, wrap) -> None:
    from nnunetv2.run.run_training import maybe_load_checkpoint

    trainer = trainers[OURS]
    own = trainer.network.state_dict()
    shifted = {k: v + 1 if v.is_floating_point() else v for k, v in own.items()}
    content = {"bare state_dict": shifted, "under 'model'": {"model": shifted},
               "nnU-Net checkpoint": {"network_weights": shifted}}[wrap]
    torch.save(content, tmp_path / "weights.pth")
    head_before = {k: v.clone() for k, v in own.items() if ".seg_layers." in k}
    maybe_load_checkpoint(trainer, False, False, str(tmp_path / "weights.pth"))
    after = trainer.network.state_dict()
    assert head_before and all(torch.equal(after[k], v) for k, v in head_before.items())
    assert all(torch.equal(after[k], shifted[k]) for k in after if ".seg_layers." not in k)
