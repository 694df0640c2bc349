"""CUDA-graph replay of the network (GPU only) and the acceleration policy (CPU).

On a GPU: graphed training steps (autocast, GradScaler, deep supervision) give the eager step's loss and
gradients; graphed inference gives the eager outputs and never hands out graph memory; moving parameters or a
failing capture falls back correctly.
"""
from __future__ import annotations

import pytest
import torch

from nnunetv2_mambahome.acceleration import ACCEL_ENV, AccelerationError, acceleration_mode, describe_acceleration

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def test_policy_on_cpu_is_eager(monkeypatch) -> None:
    monkeypatch.delenv(ACCEL_ENV, raising=False)
    assert acceleration_mode(torch.device("cpu")) == "eager"
    assert describe_acceleration(torch.device("cpu")) == "eager (CPU)"


def test_policy_on_cuda(monkeypatch) -> None:
    from nnunetv2_mambahome import acceleration
    from nnunetv2_mambahome.ops import ScanBackend

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(acceleration, "resolve_backend", lambda device, explicit=None: ScanBackend(
        explicit or "cuda", "", None, None))
    monkeypatch.delenv(ACCEL_ENV, raising=False)
    monkeypatch.delenv("nnUNet_compile", raising=False)
    assert acceleration_mode(cuda) == "graphs"
    # graphs are the default only with the backend they were verified with inside nnU-Net's train_step
    assert acceleration_mode(cuda, "triton") == "graphs"
    assert acceleration_mode(cuda, "torch") == "eager" and "torch" in describe_acceleration(cuda, "torch")
    monkeypatch.setenv(ACCEL_ENV, "graphs")
    assert acceleration_mode(cuda, "torch") == "graphs"
    monkeypatch.delenv(ACCEL_ENV)
    monkeypatch.setenv("nnUNet_compile", "f")  # nnU-Net's master switch
    assert acceleration_mode(cuda) == "eager" and "nnUNet_compile=f" in describe_acceleration(cuda)
    monkeypatch.setenv("nnUNet_compile", "t")
    monkeypatch.setenv(ACCEL_ENV, "compile")
    assert acceleration_mode(cuda) == "compile"
    monkeypatch.setenv(ACCEL_ENV, "eager")
    assert acceleration_mode(cuda) == "eager"
    monkeypatch.setenv(ACCEL_ENV, "fastest")
    with pytest.raises(AccelerationError, match="NNUNETV2_MAMBAHOME_ACCEL='fastest'"):
        acceleration_mode(cuda)


def _network():
    """A small 4-stage Mamba-HoME U-Net (light preset) from real-format plans, deep supervision on."""
    from plans_shapes import K3, configuration, plain_arch, plans

    from nnunetv2_mambahome.nets import MambaHoMEUNet

    arch = plain_arch([16, 32, 64, 128], [K3] * 4, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    torch.manual_seed(0)
    return MambaHoMEUNet.from_configuration(configuration(plans([32, 64, 64], arch)), 1, 3, True, preset="light").cuda()


def _step(net, x, scaler, target_seed=0):
    net.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16):
        outs = net(x)
        gen = torch.Generator(device="cuda").manual_seed(target_seed)
        loss = sum((o.float() - torch.rand(o.shape, generator=gen, device="cuda")).square().mean() for o in outs)
    scaler.scale(loss).backward()
    return loss.detach(), [p.grad.clone() for p in net.parameters()]


@gpu
def test_graphed_training_steps_equal_eager_steps(monkeypatch) -> None:
    torch.backends.cudnn.deterministic = True
    net = _network()
    x = torch.randn(2, 1, 32, 64, 64, device="cuda")
    scaler = torch.amp.GradScaler("cuda", init_scale=1024.0)
    monkeypatch.setenv(ACCEL_ENV, "eager")
    loss_e, grads_e = _step(net, x, scaler)
    monkeypatch.setenv(ACCEL_ENV, "graphs")
    for _ in range(4):  # 2 eager calls, capture, replay
        loss_g, grads_g = _step(net, x, scaler)
    runner = net.__dict__["_cuda_graphs"]
    assert any(s.graphs is not None and s.graphs.bwd is not None for s in runner.signatures.values())
    torch.testing.assert_close(loss_g, loss_e, rtol=1e-3, atol=1e-5)
    for a, b in zip(grads_g, grads_e):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2 * b.abs().max().item() + 1e-6)


@gpu
def test_graphed_inference_equals_eager_and_outputs_are_fresh(monkeypatch) -> None:
    net = _network().eval()
    net.decoder.deep_supervision = False
    xs = [torch.randn(1, 1, 32, 64, 64, device="cuda") for _ in range(4)]
    monkeypatch.setenv(ACCEL_ENV, "eager")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        eager = [net(x).clone() for x in xs]
    monkeypatch.setenv(ACCEL_ENV, "graphs")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        graphed = [net(x) for x in xs]  # calls 3 and 4 are replays
    for g, e in zip(graphed, eager):
        torch.testing.assert_close(g, e, rtol=1e-2, atol=1e-2)
    assert graphed[2].data_ptr() != graphed[3].data_ptr(), "each replay returns its own tensor"


@gpu
def test_capture_failure_falls_back_to_eager(monkeypatch) -> None:
    net = _network().eval()
    eager_forward = net._forward
    lines = []

    def syncing_forward(x):  # a host synchronisation cannot be captured
        x = x + x.sum().item() * 0
        return eager_forward(x)

    from nnunetv2_mambahome.cuda_graphs import graphed

    graphed(net, syncing_forward).log = lines.append
    monkeypatch.setenv(ACCEL_ENV, "graphs")
    x = torch.randn(1, 1, 32, 64, 64, device="cuda")
    with torch.no_grad():
        outs = [net(x) for _ in range(4)]
    assert any("capture failed" in line for line in lines)
    torch.testing.assert_close(outs[3], outs[0])


@gpu
def test_failed_training_capture_falls_back_to_eager_steps(monkeypatch) -> None:
    """A capture that fails in a training forward (autograd graph already built) leaves later eager steps working,
    with the eager gradients (the failed capture's autograd graph must not leak into them)."""
    net = _network()
    eager_forward = net._forward
    lines = []

    def fails_in_capture(x):  # a host synchronisation, only while capturing: the backward capture fails
        out = eager_forward(x)
        if torch.cuda.is_current_stream_capturing() and torch.is_grad_enabled():
            out[0].sum().item()
        return out

    from nnunetv2_mambahome.cuda_graphs import graphed

    graphed(net, fails_in_capture).log = lines.append
    scaler = torch.amp.GradScaler("cuda", init_scale=1.0)
    x = torch.randn(2, 1, 32, 64, 64, device="cuda")
    monkeypatch.setenv(ACCEL_ENV, "eager")
    _, eager_grads = _step(net, x, scaler)
    monkeypatch.setenv(ACCEL_ENV, "graphs")
    steps = [_step(net, x, scaler) for _ in range(4)]  # 2 eager warm-ups, the failing capture, one more
    assert any("capture failed" in line for line in lines), lines
    for _, grads in steps[2:]:
        for g, e in zip(grads, eager_grads):
            torch.testing.assert_close(g, e, rtol=1e-2, atol=1e-2)
