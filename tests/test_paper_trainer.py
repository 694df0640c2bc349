"""The paper trainer's pieces that run without nnU-Net data: LR schedule, patch check, -pretrained_weights."""
from __future__ import annotations

import pytest
import torch

from conftest import load_fixture
from nnunetv2_mambahome.compat import load_reference_module
from nnunetv2_mambahome.nets import PlansNotSupportedError
from nnunetv2_mambahome.nets.paper_net import MambaHoMEPaperNet
from nnunetv2_mambahome.training.cosine_lr import CosineAnnealingScheduler
from nnunetv2_mambahome.training.paper_trainers import check_paper_patch_size
from nnunetv2_mambahome.training.pretrained import (HEAD_PREFIX, PretrainedWeightsError,
                                                     install_pretrained_weights_support)


def test_cosine_schedule_matches_torch_per_epoch() -> None:
    """step(epoch) at each epoch start gives torch's CosineAnnealingLR stepped once per epoch (official)."""
    epochs = 8
    ours = CosineAnnealingScheduler(torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-4), 1e-4, epochs)
    ref_opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-4)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=epochs, eta_min=0)
    for epoch in range(epochs):
        ours.step(epoch)
        assert ours.optimizer.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        ref_opt.step()
        ref.step()
    assert ours.lr_at(0) == 1e-4 and ours.lr_at(epochs) == pytest.approx(0.0, abs=1e-15)


def test_patch_size_check() -> None:
    check_paper_patch_size([64, 80, 64])
    with pytest.raises(PlansNotSupportedError, match=r"\[40, 56, 40\].*\[32, 48, 32\] or \[48, 64, 48\].*"
                                                     r'"3d_fullres_p16": \{"inherits_from": "3d_fullres"'):
        check_paper_patch_size([40, 56, 40], "3d_fullres")
    with pytest.raises(PlansNotSupportedError, match="3D only"):
        check_paper_patch_size([64, 64])


def _official_kwargs(fx: dict, out_chans: int) -> dict:
    return {**fx["config"]["constructor_kwargs"], "out_chans": out_chans}


def test_pretrained_weights_accepts_official_checkpoints(tmp_path, fixture_dir) -> None:
    """nnUNetv2_train's -pretrained_weights call loads {"model": official_state_dict} into the paper net,
    all but the head (whose class count differs here), and still passes nnU-Net checkpoints to nnU-Net."""
    from nnunetv2.run import run_training

    fx = load_fixture("net")
    official = tmp_path / "official.pt"
    torch.save({"model": fx["state_dict"], "optimizer": {}}, official)
    install_pretrained_weights_support()
    torch.manual_seed(1)
    net = MambaHoMEPaperNet.from_reference_kwargs(_official_kwargs(fx, out_chans=5))
    head_before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith(HEAD_PREFIX)}
    run_training.load_pretrained_weights(net, str(official), verbose=False)
    expected = load_reference_module(fx).state_dict()
    for key, value in net.state_dict().items():
        if key.startswith(HEAD_PREFIX):
            torch.testing.assert_close(value, head_before[key], rtol=0, atol=0)
        else:
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0)

    nnunet_ckpt = tmp_path / "nnunet.pth"
    torch.save({"network_weights": net.state_dict()}, nnunet_ckpt)
    other = MambaHoMEPaperNet.from_reference_kwargs(_official_kwargs(fx, out_chans=5))
    run_training.load_pretrained_weights(other, str(nnunet_ckpt), verbose=False)
    torch.testing.assert_close(other.state_dict()["encoder.stages.0.gsc.proj.weight"],
                               net.state_dict()["encoder.stages.0.gsc.proj.weight"], rtol=0, atol=0)


def test_pretrained_weights_rejects_foreign_files(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"some.weight": torch.zeros(1)}}, bad)
    install_pretrained_weights_support()
    from nnunetv2.run import run_training

    net = MambaHoMEPaperNet(depths=(1, 1, 1, 1), feat_size=(8, 16, 24, 32), hidden_size=48,
                            experts_list=(2, 2, 2, 2), group_list=(64, 64, 64, 64))
    with pytest.raises(PretrainedWeightsError, match=r"does not fit MambaHoMEPaperNet: (\d+) of the network's \1 tensors missing"):
        run_training.load_pretrained_weights(net, str(bad))
