"""Plain-torch baselines for the benchmarks, written straight from the formulas (docs/science.md §1-2):
the disentangled transformer computed densely, and a sampler that draws one position at a time."""

from __future__ import annotations

import torch

from interp_causal.tasks import InContextTask
from interp_causal.tasks.task import stationary


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


def naive_sample(task: InContextTask, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [n, T], target [n, S])`` the plain way: every table row drawn from
    ``Dirichlet(alpha)`` with ``torch.distributions``, then one position at a time with
    ``torch.multinomial`` (roots: stationary distribution for single-parent graphs, else uniform;
    the query uniform)."""
    graph, S = task.graph, task.vocab_size
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))  # Dirichlet takes no generator
    degrees = sorted({len(p) for p in graph.parents if p} | {len(graph.target_parents)})
    dirichlet = torch.distributions.Dirichlet(torch.full((S,), task.alpha, dtype=torch.float64))
    tables = {k: dirichlet.sample((n, S**k)) for k in degrees}
    uniform = torch.full((n, S), 1.0 / S, dtype=torch.float64)
    root = stationary(tables[1]) if graph.is_single_parent else uniform
    tokens = torch.empty(n, graph.seq_len, dtype=torch.long)
    rows = torch.arange(n)

    def row(ps):
        idx = torch.zeros(n, dtype=torch.long)
        for p in ps:
            idx = idx * S + tokens[:, p]
        return tables[len(ps)][rows, idx]

    for i, ps in enumerate(graph.parents):
        probs = row(ps) if ps else (uniform if i == graph.query_position else root)
        tokens[:, i] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return tokens, row(graph.target_parents)
