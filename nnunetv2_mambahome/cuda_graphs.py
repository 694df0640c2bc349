"""Replay a network's forward (and backward) as CUDA graphs: the default fast path on GPUs.

Why: a Mamba-HoME training step launches over a thousand small kernels (token layers, HoME routing, norms) and
the GPU sat idle half of every step waiting for the CPU to launch them (docs/BENCHMARKS.md). nnU-Net never
changes the patch size of a configuration, so every training step, validation step and sliding-window tile
has the same shapes: each is captured once and then replayed as one graph launch.

How (the recipe of `torch.cuda.make_graphed_callables`, specialised to nnU-Net's calls):
- A call signature is (input shape/dtype/device, train/eval mode, grad mode, autocast state, deep
  supervision). Its first `WARMUP_CALLS` calls run eagerly (cuDNN autotuning, Triton compilation, lazy
  initialisation), then the forward is captured, and with grad enabled the backward too (autograd.grad of the
  outputs with respect to every parameter, from static output gradients). The two graphs of a signature share
  one memory pool; signatures do not (a validation replay must not overwrite a training step's activations).
- Replays go through an autograd Function whose inputs are the input and every parameter, so autograd,
  GradScaler (the scaled output gradients are copied in), gradient clipping and optimizers see ordinary
  tensors. Outputs and gradients are fresh tensors (one fused copy), so nothing aliases graph memory.
- Before capturing, the captured calls are rehearsed once on a side stream (contiguous output gradients,
  autocast cache off): cuDNN's autotuning (`cudnn.benchmark`, which nnUNetv2_train sets) of layouts the eager
  calls never used then happens outside the capture, where it is allowed.
- Capture runs on fresh leaf aliases of the parameters (`fresh_leaves`), so no autograd node of an eager call
  the caller still holds leaks into the captured backward.
- Capture runs with the autocast weight cache off: cached casts from eager calls would otherwise be read by
  the graph after autocast freed them (the reason make_graphed_callables forbids the cache).
- The graph is invalidated when a parameter moves (e.g. `.to(device)`). Numerics are those of the eager
  forward: the same kernels.
- A capture that fails raises `CaptureFailedError` naming the switch to eager, after one log line. No
  in-process fallback: after a failed capture, later CUDA work in the same process failed on the H200
  ("Offset increment outside graph capture encountered unexpectedly" from the next random-number call: the
  CUDA generator stays in capture mode; "operation not permitted when stream is capturing" in an eager
  backward; docs/BENCHMARKS.md).
Not used under torch.compile tracing (the eager forward is traced instead) nor under DDP (see `acceleration`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

WARMUP_CALLS = 2
ACCEL_HINT = "NNUNETV2_MAMBAHOME_ACCEL=eager (or nnUNet_compile=f)"


class CaptureFailedError(RuntimeError):
    """A CUDA-graph capture failed; the process cannot go on using CUDA reliably (see `GraphedForward`)."""


@dataclass
class _Graphs:
    """One captured signature: static input, outputs (and output grads), graphs, and the outputs' structure."""

    static_x: Tensor
    fwd: torch.cuda.CUDAGraph
    static_outs: tuple
    is_list: bool
    bwd: Optional[torch.cuda.CUDAGraph] = None
    static_grad_outs: tuple = ()
    static_grads: tuple = ()


@dataclass
class _Signature:
    calls: int = 0
    graphs: Optional[_Graphs] = None


class _Replay(torch.autograd.Function):
    @staticmethod
    def forward(ctx, graphs: _Graphs, x: Tensor, *params: Tensor):  # type: ignore[override]
        graphs.static_x.copy_(x)
        graphs.fwd.replay()
        ctx.graphs = graphs
        return tuple(torch._foreach_mul(list(graphs.static_outs), 1))  # fresh copies, one fused launch

    @staticmethod
    def backward(ctx, *grad_outs: Tensor):  # type: ignore[override]
        g = ctx.graphs
        for static, grad in zip(g.static_grad_outs, grad_outs):
            static.copy_(grad) if grad is not None else static.zero_()
        g.bwd.replay()
        present = [t for t in g.static_grads if t is not None]
        fresh = iter(torch._foreach_mul(present, 1)) if present else iter(())
        return (None, None, *[next(fresh) if t is not None else None for t in g.static_grads])


@dataclass
class GraphedForward:
    """CUDA-graph replay of `forward` (the module's eager forward) per call signature; see the module docstring.

    `log` receives one line per captured or failed signature (trainers pass their log function)."""

    module: nn.Module
    forward: Callable[[Tensor], Any]
    log: Callable[[str], None] = print
    signatures: dict = field(default_factory=dict)
    _param_ptrs: tuple = ()

    def __call__(self, x: Tensor) -> Any:
        params = [p for p in self.module.parameters()]
        ptrs = tuple(p.data_ptr() for p in params)
        if ptrs != self._param_ptrs:  # first call, or parameters moved: every graph is stale
            self.signatures.clear()
            self._param_ptrs = ptrs
        if x.requires_grad:  # gradients with respect to the input: not nnU-Net's use, left to eager autograd
            return self.forward(x)
        key = self._signature(x)
        sig = self.signatures.setdefault(key, _Signature())
        if sig.calls < WARMUP_CALLS:
            sig.calls += 1
            return self.forward(x)
        if sig.graphs is None:
            try:
                sig.graphs = self._capture(x, [p for p in params if p.requires_grad])
            except Exception as exc:
                why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
                self.log(f"CUDA graph capture failed for input {tuple(x.shape)} ({why})")
                raise CaptureFailedError(
                    f"CUDA graph capture failed for input {tuple(x.shape)} ({why}). PyTorch cannot continue in "
                    f"this process after a failed capture (its CUDA generator stays in capture mode), so there is "
                    f"no silent eager fallback: rerun with {ACCEL_HINT}") from exc
            self.log(f"CUDA graph captured for input {tuple(x.shape)} "
                     f"({'training' if key[3] else 'inference'}{', with backward' if key[4] else ''})")
        return self._replay(sig.graphs, x, params)

    def _signature(self, x: Tensor) -> tuple:
        dev = x.device.type
        autocast = torch.is_autocast_enabled(dev)
        ds = getattr(getattr(self.module, "decoder", None), "deep_supervision", None)
        return (tuple(x.shape), x.dtype, x.device, self.module.training, torch.is_grad_enabled(), autocast,
                torch.get_autocast_dtype(dev) if autocast else None, ds)

    def _replay(self, graphs: _Graphs, x: Tensor, params: list) -> Any:
        if graphs.bwd is None:
            graphs.static_x.copy_(x)
            graphs.fwd.replay()
            outs = tuple(torch._foreach_mul(list(graphs.static_outs), 1))
        else:
            outs = _Replay.apply(graphs, x, *[p for p in params if p.requires_grad])
        return list(outs) if graphs.is_list else outs[0]

    def _capture(self, x: Tensor, params: list) -> _Graphs:
        dev = x.device.type
        autocast = torch.is_autocast_enabled(dev)
        dtype = torch.get_autocast_dtype(dev)
        with_grad = torch.is_grad_enabled()
        static_x = x.detach().clone()
        with fresh_leaves(self.module, params) as leaves:
            self._rehearse(static_x, leaves, autocast, dtype, with_grad)
            pool = torch.cuda.graph_pool_handle()
            torch.cuda.synchronize(x.device)
            torch.cuda.empty_cache()  # hand the eager calls' cached blocks back, so the graph's pool can reuse them
            fwd = torch.cuda.CUDAGraph()
            with torch.autocast(dev, dtype=dtype, enabled=autocast, cache_enabled=False):
                with torch.cuda.graph(fwd, pool=pool):
                    outs = self.forward(static_x)
            is_list = isinstance(outs, (list, tuple))
            static_outs = tuple(outs) if is_list else (outs,)
            graphs = _Graphs(static_x, fwd, static_outs, is_list)
            if with_grad and leaves:
                graphs.static_grad_outs = tuple(torch.empty_like(o) for o in static_outs)
                graphs.bwd = torch.cuda.CUDAGraph()
                # nnU-Net runs backward outside autocast; capture it so (the caller's autocast is still on here)
                with torch.autocast(dev, enabled=False), torch.cuda.graph(graphs.bwd, pool=pool):
                    graphs.static_grads = torch.autograd.grad(static_outs, leaves,
                                                              grad_outputs=graphs.static_grad_outs, allow_unused=True)
                # outputs must not carry the capture's autograd graph into user code
                graphs.static_outs = tuple(o.detach() for o in static_outs)
        return graphs

    def _rehearse(self, static_x: Tensor, params: list, autocast: bool, dtype: torch.dtype, with_grad: bool) -> None:
        """Run the exact calls of the capture once, eagerly, on a side stream (as make_graphed_callables does).

        The eager warm-up calls are nnU-Net's own forward and `loss.backward()`, whose output gradients have the
        loss's layouts; the captured backward gets contiguous ones. With `cudnn.benchmark` (nnUNetv2_train sets
        it) a convolution of a layout not seen yet is benchmarked on first use, which cannot happen inside a
        capture ("FIND was unable to find an engine", then the capture is invalidated; seen on the H200 with
        both scan backends). Rehearsing the captured calls does that autotuning outside the capture."""
        dev = static_x.device.type
        side = torch.cuda.Stream(static_x.device)
        side.wait_stream(torch.cuda.current_stream(static_x.device))
        with torch.cuda.stream(side):
            with torch.autocast(dev, dtype=dtype, enabled=autocast, cache_enabled=False):
                outs = self.forward(static_x)
            outs = tuple(outs) if isinstance(outs, (list, tuple)) else (outs,)
            if with_grad and params:
                with torch.autocast(dev, enabled=False):
                    torch.autograd.grad(outs, params, grad_outputs=[torch.zeros_like(o) for o in outs],
                                        allow_unused=True)
            del outs
        torch.cuda.current_stream(static_x.device).wait_stream(side)


@contextlib.contextmanager
def fresh_leaves(module: nn.Module, params: list) -> Iterator[list]:
    """Within the block, `module` holds new leaf Parameters sharing storage with `params` (yielded in their
    order); the originals are put back afterwards.

    Why: autograd keeps one gradient-accumulation node per parameter while any graph that uses the parameter is
    alive, and that node remembers the stream it was made on. A graph of an earlier eager call that the caller
    still holds (a loss or outputs kept in a variable) would hand the captured backward nodes made on the
    default stream, and the capture fails ("operation would make the legacy stream depend on a capturing
    blocking stream"; PyTorch's remedy is warm-up on a side stream, which a caller's own eager steps are not).
    New leaves get nodes made inside the capture; they share storage, so replays read the live parameters."""
    alias = {id(p): nn.Parameter(p.detach(), requires_grad=True) for p in params}
    swapped = []
    for m in module.modules():
        for name, p in m._parameters.items():
            if p is not None and id(p) in alias:
                swapped.append((m, name, p))
    try:
        for m, name, p in swapped:
            m._parameters[name] = alias[id(p)]
        yield [alias[id(p)] for p in params]
    finally:
        for m, name, p in swapped:
            m._parameters[name] = p


def graphed(module: nn.Module, forward: Callable[[Tensor], Any]) -> GraphedForward:
    """The module's `GraphedForward` over its eager `forward` (made on first use, kept outside the module tree,
    so state_dict and parameters are unchanged)."""
    runner = module.__dict__.get("_cuda_graphs")
    if runner is None:
        runner = module.__dict__["_cuda_graphs"] = GraphedForward(module, forward)
    return runner
