"""A bank of E GEGLU feed-forward experts evaluated together with batched matmuls."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GEGLUExperts(nn.Module):
    """Expert e maps d -> d as Linear(d, 2h) -> value * GELU(gate) -> Linear(h, d).

    The first half of the first Linear's output is the value, the second half the (exact erf) GELU gate, as
    in the reference's `GEGLU`. Weights are stacked per expert (E, out, in) so all experts run in one bmm;
    each expert is initialised like an `nn.Linear`. Input (E, ..., d), output the same shape.
    """

    def __init__(self, num_experts: int, dim: int, hidden: int):
        super().__init__()
        self.w_in = nn.Parameter(torch.empty(num_experts, 2 * hidden, dim))
        self.b_in = nn.Parameter(torch.empty(num_experts, 2 * hidden))
        self.w_out = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.b_out = nn.Parameter(torch.empty(num_experts, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w, b in ((self.w_in, self.b_in), (self.w_out, self.b_out)):
            bound = 1.0 / math.sqrt(w.shape[-1])  # nn.Linear's default: kaiming_uniform(a=sqrt(5)) and bias
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(shape[0], -1, shape[-1])
        value, gate = torch.baddbmm(self.b_in[:, None], x, self.w_in.transpose(1, 2)).chunk(2, dim=-1)
        y = torch.baddbmm(self.b_out[:, None], value * F.gelu(gate), self.w_out.transpose(1, 2))
        return y.reshape(shape)

    def extra_repr(self) -> str:
        e, two_h, d = self.w_in.shape
        return f"num_experts={e}, dim={d}, hidden={two_h // 2}"
