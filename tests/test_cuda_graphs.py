"""CUDA-graph replay of the network (GPU only) and the acceleration policy (CPU).

On a GPU: graphed training steps (autocast, GradScaler, deep supervision) give the eager step's loss and
gradients; graphed inference gives the eager outputs and never hands out graph memory; moving parameters
re-captures; capture works under cudnn.benchmark when an output got no gradient in the eager calls (nnU-Net's
deep supervision skips the lowest one) and while the caller still holds an eager step's graph; a failing
capture stops the run with one clear error naming the switch to eager.
"""
from __future__ import annotations

import os

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
    assert acceleration_mode(cuda, "triton") == "graphs"
    # graphs are the default only with the backends they were verified with inside nnU-Net's train_step
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


def test_fresh_leaves_share_storage_and_get_their_own_autograd_nodes() -> None:
    """Inside `fresh_leaves` the module computes with new leaves over the same storage (gradients equal the
    originals'), whose accumulation nodes are not those a still-alive earlier graph holds; afterwards the module
    has its own parameters back (tied ones stay tied)."""
    from nnunetv2_mambahome.cuda_graphs import fresh_leaves

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    net[2].weight = net[0].weight  # tied
    params = list(net.parameters())
    x = torch.randn(3, 4)
    kept = net(x).square().sum()  # an earlier graph the caller keeps alive
    expected = torch.autograd.grad(kept, params, retain_graph=True)
    old_node = (params[0] * 1).grad_fn.next_functions[0][0]
    with fresh_leaves(net, params) as leaves:
        assert all(a is not p and a.data_ptr() == p.data_ptr() for a, p in zip(leaves, params))
        assert net[0].weight is leaves[0] and net[2].weight is leaves[0]
        assert (leaves[0] * 1).grad_fn.next_functions[0][0] is not old_node
        got = torch.autograd.grad(net(x).square().sum(), leaves)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    assert [id(p) for p in net.parameters()] == [id(p) for p in params] and net[2].weight is net[0].weight
    assert kept.grad_fn is not None


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
    return loss.detach(), [p.grad.clone() for p in net.parameters() if p.requires_grad]  # frozen: cancelled biases


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


CAPTURE_FAILS = """
import sys, torch
sys.path.insert(0, "tests")
from test_cuda_graphs import _network, _step
from nnunetv2_mambahome.cuda_graphs import graphed
net = _network()
eager_forward = net._forward
def fails_in_capture(x):  # a host synchronisation while capturing
    out = eager_forward(x)
    if torch.cuda.is_current_stream_capturing():
        out[0].sum().item()
    return out
graphed(net, fails_in_capture).log = lambda line: print("LOG", line)
scaler = torch.amp.GradScaler("cuda")
x = torch.randn(2, 1, 32, 64, 64, device="cuda")
for _ in range(3):
    _step(net, x, scaler)
"""


@gpu
@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
def test_failed_capture_stops_with_the_switch_to_eager(grad) -> None:
    """A failing capture ends the run with one clear error naming the switch (PyTorch cannot go on in that
    process), after the log line; it never continues with broken CUDA state. Run in a child process."""
    import subprocess
    import sys
    from pathlib import Path

    code = CAPTURE_FAILS if grad else CAPTURE_FAILS.replace("_step(net, x, scaler)", "net.eval()(x)").replace(
        "for _ in range(3):", "with torch.no_grad():\n  for _ in range(3):")
    env = dict(os.environ, **{ACCEL_ENV: "graphs"})
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert done.returncode != 0
    assert "LOG CUDA graph capture failed for input (2, 1, 32, 64, 64)" in done.stdout
    assert "CaptureFailedError" in done.stderr and "NNUNETV2_MAMBAHOME_ACCEL=eager" in done.stderr


CAPTURE_UNDER_CUDNN_BENCHMARK = """
import sys, torch
sys.path.insert(0, "tests")
from test_cuda_graphs import _network
torch.backends.cudnn.benchmark = True  # as nnUNetv2_train sets it
net = _network()
scaler = torch.amp.GradScaler("cuda")
x = torch.randn(2, 1, 32, 64, 64, device="cuda")
for _ in range(4):  # 2 eager calls, capture, replay; the previous step's outs and loss stay alive meanwhile
    net.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16):
        outs = net(x)
        # nnU-Net's deep supervision weights the lowest output 0 and leaves it out of the loss: its output conv's
        # backward never runs eagerly, so cuDNN has not autotuned it before the capture
        loss = sum(o.float().square().mean() for o in outs[:-1])
    scaler.scale(loss).backward()
    assert torch.isfinite(loss)
sigs = net.__dict__["_cuda_graphs"].signatures.values()
print("captured with backward:", [s.graphs is not None and s.graphs.bwd is not None for s in sigs])
"""


@gpu
def test_capture_under_cudnn_benchmark_with_an_output_left_out_of_the_loss() -> None:
    """Fresh process (empty cuDNN autotuning cache): the captured backward's convolutions are autotuned before the
    capture, not inside it (where cuDNN's benchmark fails and invalidates the capture)."""
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, **{ACCEL_ENV: "graphs"})
    done = subprocess.run([sys.executable, "-c", CAPTURE_UNDER_CUDNN_BENCHMARK], capture_output=True, text=True,
                          env=env, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "captured with backward: [True]" in done.stdout
