"""Level 2 of HoME: a Soft-MoE whose slot embeddings are derived from the tokens themselves."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .geglu_experts import GEGLUExperts
from .rms_norm import RMSNorm


class DynamicSlotsSoftMoE(nn.Module):
    """Soft-MoE over n tokens with E experts and n/E slots per expert (the reference's `DynamicSlotsSoftMoE`).

    Tokens are RMS-normalised; means of E consecutive tokens are projected to one slot embedding per expert;
    dispatch = softmax of the logits over tokens, combine = softmax over all slots. When n is not a multiple
    of E, zero tokens are appended and, as in the reference, *not* masked (they take part in the dispatch
    softmax with logit 0). Input and output (batch, n, d).
    """

    def __init__(self, dim: int, num_experts: int, expert_hidden: int):
        super().__init__()
        self.num_experts = num_experts
        self.norm = RMSNorm(dim)
        self.slot_proj = nn.Linear(dim, dim * num_experts, bias=False)
        self.slot_norm = RMSNorm(dim)
        self.experts = GEGLUExperts(num_experts, dim, expert_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        e = self.num_experts
        x = self.norm(x)
        x = F.pad(x, (0, 0, 0, (-n) % e))
        segment_means = x.view(b, -1, e, d).mean(2)  # (b, s, d), s = slots per expert
        s = segment_means.shape[1]
        slot_embeds = self.slot_norm(self.slot_proj(segment_means).view(b, s, e, d).transpose(1, 2))  # (b, e, s, d)
        logits = torch.bmm(x, slot_embeds.reshape(b, e * s, d).transpose(1, 2))  # (b, n', M), slot m = e*s_i + s
        combine = logits.softmax(dim=-1)
        # dispatch normalises over tokens: softmax over contiguous rows of the transposed logits (a strided
        # softmax over dim 1 ran ~10x slower on the GPU)
        dispatch = logits.transpose(1, 2).contiguous().softmax(dim=-1)  # (b, M, n')
        slots = torch.bmm(dispatch, x).view(b, e, s, d).transpose(0, 1)  # (e, b, s, d)
        out = self.experts(slots).transpose(0, 1).reshape(b, e * s, d)
        return torch.bmm(combine, out)[:, :n]
