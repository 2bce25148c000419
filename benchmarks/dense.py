"""Plain-torch baselines for the benchmarks: the paper's disentangled transformer written densely,
straight from its formula (PAPER.md §2), with its own parameters."""

from __future__ import annotations

import torch


class DenseCatFormer(torch.nn.Module):
    """``H <- [H, softmax(causal(H A_1 H^T)) H, ...]`` per layer, ``logits = W^T H_{T-1}``, with
    ``H_0 = [onehot(s_i); onehot(i)]``: every layer at every position, dense matmuls."""

    def __init__(self, vocab_size: int, seq_len: int, heads: tuple[int, ...] = (1, 1)):
        super().__init__()
        self.S, self.T, self.heads = vocab_size, seq_len, tuple(heads)
        d = vocab_size + seq_len
        self.A = torch.nn.ParameterList()
        for m in self.heads:
            self.A.append(torch.nn.Parameter(torch.zeros(m, d, d)))
            d *= 1 + m
        self.W = torch.nn.Parameter(torch.zeros(d, vocab_size))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, T = tokens.shape
        onehot = torch.nn.functional.one_hot(tokens, self.S).float()
        H = torch.cat([onehot, torch.eye(T).expand(B, T, T)], dim=-1)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        for A in self.A:
            scores = torch.einsum("bid,mde,bje->bmij", H, A, H).masked_fill(mask, float("-inf"))
            out = scores.softmax(-1) @ H[:, None]  # [B, m, T, d]
            H = torch.cat([H, *out.unbind(1)], dim=-1)
        return H[:, -1] @ self.W
