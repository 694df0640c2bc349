"""DDP as nnU-Net runs it (no find_unused_parameters), on 2 CPU processes with gloo.

Checks that two training steps of MambaHoMEUNet with nnU-Net's deep-supervision loss run under DDP (an
unused parameter would raise on the second step) and that the averaged gradients equal the single-process
gradients on the whole batch, i.e. the global batch split across ranks is the same optimisation.
"""
from __future__ import annotations

import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from plans_shapes import configuration, plain_arch, plans

PATCH = [16, 16, 16]
ARCH = plain_arch([4, 8, 16], [[3, 3, 3]] * 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]])


def _build():
    from nnunetv2_mambahome.nets import MambaHoMEUNet

    torch.manual_seed(0)
    return MambaHoMEUNet.from_configuration(configuration(plans(PATCH, ARCH)), 1, 3, True, preset="light")


def _loss(ddp: bool):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    weights = np.array([1 / 2 ** i for i in range(2)])
    weights[-1] = 1e-6 if ddp else 0  # what nnUNetTrainer._build_loss does without torch.compile
    loss = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": ddp}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    return DeepSupervisionWrapper(loss, weights / weights.sum())


def _batch(step: int):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(4, 1, *PATCH, generator=g)
    seg = (x > 0.5).long() + (x > 1.5).long()
    return x, [seg.float(), seg[:, :, ::2, ::2, ::2].float()]


def _worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    net = torch.nn.parallel.DistributedDataParallel(_build())
    loss = _loss(ddp=True)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    for step in range(2):
        x, y = _batch(step)
        half = slice(2 * rank, 2 * rank + 2)
        opt.zero_grad()
        loss(net(x[half]), [t[half] for t in y]).backward()
        if step == 0 and rank == 0:
            out["grads"] = {n: p.grad.clone() for n, p in net.module.named_parameters() if p.requires_grad}
        opt.step()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_matches_single_process() -> None:
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    net = _build()
    x, y = _batch(0)
    # single process, whole batch, same loss weights as the DDP run
    _loss(ddp=True)(net(x), y).backward()
    ddp_grads = out["grads"]
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}  # frozen: cancelled conv biases
    assert set(ddp_grads) == set(trainable) and len(trainable) < len(dict(net.named_parameters()))
    for name, p in trainable.items():
        torch.testing.assert_close(ddp_grads[name], p.grad, rtol=1e-3, atol=1e-5, msg=name)
