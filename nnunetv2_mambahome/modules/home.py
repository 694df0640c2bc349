"""The HoME layer: hierarchical (two-level) soft mixture of experts over grouped tokens (paper eq. 1-9)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import float32_region, token_region
from .dynamic_slots_soft_moe import DynamicSlotsSoftMoE
from .geglu_experts import GEGLUExperts
from .rms_norm import RMSNorm


def expert_hidden_size(dim: int, expert_mult: float) -> int:
    """Hidden width of a GEGLU expert, int(d * mult * 2/3) as in the reference."""
    return int(dim * expert_mult * 2 / 3)


class HoME(nn.Module):
    """Hierarchical soft MoE on tokens (batch, N, d); no residual and no output projection inside.

    Level 1: tokens are cut into G = ceil(N/K) groups of K consecutive tokens (zero-padded at the end). Each
    group's mean is projected to E*S slot embeddings; each token's softmax over those M = E*S slots (C) both
    builds the slots (Z = C^T X, from the un-normalised tokens) and combines back. Slots of expert e go
    through GEGLU expert e, scaled by a learnable per-expert gate and a per-group sigmoid gate in [0.01, 1].
    Level 2: all G*M slot outputs form one sequence processed by a `DynamicSlotsSoftMoE` with E2 experts
    (default 2E), mixing information across groups. Outputs return to tokens through C.

    Semantics follow the official `HierarchicalDynamicSlotsSoftMoE` exactly (tested on its golden outputs).
    Input, routing, slots and experts are float32, the output has the token dtype (see `precision`).
    """

    def __init__(self, dim: int, group_size: int, num_experts: int, slots_per_expert: int = 4,
                 num_experts_second: Optional[int] = None, expert_mult: float = 2.0):
        super().__init__()
        if min(dim, group_size, num_experts, slots_per_expert) < 1:
            raise ValueError("HoME needs positive dim, group_size, num_experts and slots_per_expert")
        hidden = expert_hidden_size(dim, expert_mult)
        if hidden < 1:
            raise ValueError(f"expert_mult={expert_mult} gives an empty expert hidden layer for dim={dim}")
        self.group_size = group_size
        self.num_experts = num_experts
        self.slots_per_expert = slots_per_expert
        self.norm = RMSNorm(dim)
        self.slot_proj = nn.Linear(dim, num_experts * slots_per_expert * dim, bias=False)
        self.slot_norm = RMSNorm(dim)
        self.experts = GEGLUExperts(num_experts, dim, hidden)
        self.expert_gates = nn.Parameter(torch.ones(num_experts))
        self.group_gate = nn.Linear(dim, 1)
        self.level2 = DynamicSlotsSoftMoE(dim, num_experts_second or 2 * num_experts, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with token_region(x.device) as dtype:
            return self._forward(x, dtype)

    def _forward(self, x: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        """Everything up to the slot outputs in float32, the token-sized product back to tokens in out_dtype.

        Both routing levels use un-tempered logits of size up to ~d, so HoME amplifies rounding of its input
        many-fold (bfloat16 inputs gave ~10% output differences at d=320): its input, routing, slots and
        experts stay float32 (slots are few: G*M for N tokens). Only the last token-sized product, slot
        outputs -> tokens, runs in the token dtype.
        """
        b, n, d = x.shape
        k, e, s = self.group_size, self.num_experts, self.slots_per_expert
        if n % k:  # pads are zero: zero slot mass, uniform routing, sliced off below
            x = F.pad(x, (0, 0, 0, (-n) % k))
        g = x.shape[1] // k
        with float32_region(x.device):
            tokens = x.view(b, g, k, d).float()
            group_mean = tokens.mean(2)  # (b, g, d), includes the pads like the reference
            slot_embeds = self.slot_norm(self.slot_proj(group_mean).view(b, g, e * s, d))  # slot m = e*S + s
            combine = self._routing_logits(tokens, slot_embeds).softmax(dim=-1)  # (b, g, k, m)
            slots = torch.einsum("bgkd,bgkm->bgmd", tokens, combine)  # sums, not averages, as the reference
            expert_in = slots.view(b, g, e, s, d).permute(2, 0, 1, 3, 4)  # (e, b, g, s, d)
            y = self.experts(expert_in) * self.expert_gates.view(e, 1, 1, 1, 1)
            group_gate = torch.sigmoid(self.group_gate(group_mean)).clamp(0.01, 1.0)  # (b, g, 1)
            y = y.permute(1, 2, 0, 3, 4).reshape(b, g, e * s, d) * group_gate[..., None]
            y = self.level2(y.reshape(b, g * e * s, d)).view(b, g, e * s, d)
        out = torch.einsum("bgmd,bgkm->bgkd", y.to(out_dtype), combine.to(out_dtype)).reshape(b, g * k, d)
        return out[:, :n] if out.shape[1] != n else out

    def _routing_logits(self, tokens: torch.Tensor, slot_embeds: torch.Tensor) -> torch.Tensor:
        """einsum(norm(tokens), slot_embeds) without materialising the normalised tokens: the RMSNorm's
        gamma*sqrt(d) moves onto the few slot embeddings, its 1/||x|| onto the logits."""
        inv_norm = tokens.norm(dim=-1, keepdim=True).clamp_min(self.norm.eps).reciprocal()
        slot_embeds = slot_embeds * (self.norm.gamma * self.norm.scale)
        return torch.einsum("bgkd,bgmd->bgkm", tokens, slot_embeds) * inv_norm

    def extra_repr(self) -> str:
        return (f"group_size={self.group_size}, num_experts={self.num_experts}, "
                f"slots_per_expert={self.slots_per_expert}, num_experts_second={self.level2.num_experts}")
