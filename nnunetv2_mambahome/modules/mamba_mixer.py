"""Mamba (v1) mixer with the parameters, names and initialisation of `mamba_ssm.Mamba`."""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import nn

from ..ops import resolve_backend
from ..ops.mamba_inner import channels_first_linear
from ..precision import token_region


class MambaMixer(nn.Module):
    """Selective state-space mixer over a token sequence (batch, L, d_model) -> same shape.

    Parameters (`in_proj`, `conv1d`, `x_proj`, `dt_proj`, `A_log`, `D`, `out_proj`) match mamba-ssm's
    `Mamba` one to one, so its state_dicts load unchanged. The mixer body runs on the backend chosen by
    `ops.resolve_backend` (Triton or mamba-ssm kernels on CUDA, pure PyTorch on CPU). Projections
    run in the token dtype, the scan's recurrence in float32 (see `precision`); the output has the token
    dtype. `backend=None` follows NNUNETV2_MAMBAHOME_SCAN / auto.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Union[int, str] = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, backend: Optional[str] = None):
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.backend = backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1,
                                bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        self._init_dt(dt_init, dt_scale, dt_min, dt_max, dt_init_floor)
        self.A_log._no_weight_decay = True  # same markers as mamba-ssm, for optimisers that honour them
        self.D._no_weight_decay = True

    def _init_dt(self, dt_init: str, dt_scale: float, dt_min: float, dt_max: float, floor: float) -> None:
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_proj.bias._no_reinit = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        with token_region(hidden_states.device) as dtype:
            x = hidden_states.to(dtype)
            # in_proj as W @ x^T per sample: xz (b, 2*d_inner, L) contiguous, L contiguous as the scan kernels read
            # it, with no transposed copy of the widest activation. Unlike mamba-ssm's one (2*d_inner, b*L) GEMM,
            # whose halves are permuted views, x and z are plain slices here: kernels' outputs allocated like them
            # (the scan's out_z and dz, the conv's out and dx) are contiguous, so no copies follow (H200 profile:
            # 9 strided copies of (b, d_inner, L) per Mamba layer before, docs/BENCHMARKS.md)
            xz = channels_first_linear(x, self.in_proj.weight.to(dtype))
            if self.in_proj.bias is not None:
                xz = xz + self.in_proj.bias.to(dtype)[:, None]
            out_bias = None if self.out_proj.bias is None else self.out_proj.bias.to(dtype)
            return resolve_backend(x.device, self.backend).mamba_inner(
                xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight.to(dtype), self.dt_proj.weight.to(dtype),
                self.dt_proj.bias.float(), self.out_proj.weight.to(dtype), out_bias,
                -torch.exp(self.A_log.float()), self.D.float(),
            )

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, "
                f"expand={self.expand}, dt_rank={self.dt_rank}, backend={self.backend or 'env/auto'}")
