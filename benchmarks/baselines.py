"""Plain-torch baselines for the benchmarks, written straight from the formulas (docs/science.md §1-2):
the disentangled transformer computed densely, and a sampler that draws one position at a time."""

from __future__ import annotations

import math

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


class PlainAttnOnly(torch.nn.Module):
    """A standard attention-only transformer in plain torch (nanoGPT-style, no LayerNorm, no MLP):
    token and learned position embeddings, per layer ``x += softmax(causal(q k^T / sqrt(d_head))) v W_O``,
    logits at the last position. The function of ``standard_model(..., mlp=False)``."""

    def __init__(self, vocab_size: int, seq_len: int, n_layers: int, n_heads: int, d_model: int):
        super().__init__()
        dh = d_model // n_heads
        self.n_heads, self.dh = n_heads, dh
        init = lambda *shape: torch.nn.Parameter(0.02 * torch.randn(*shape))  # noqa: E731
        self.W_E, self.W_pos = init(vocab_size, d_model), init(seq_len, d_model)
        self.qkv = torch.nn.ModuleList(torch.nn.Linear(d_model, 3 * d_model) for _ in range(n_layers))
        self.out = torch.nn.ModuleList(torch.nn.Linear(d_model, d_model) for _ in range(n_layers))
        self.W_U = torch.nn.Linear(d_model, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, T = tokens.shape
        x = self.W_E[tokens] + self.W_pos[:T]
        mask = torch.ones(T, T, dtype=torch.bool, device=tokens.device).triu(1)
        for qkv, out in zip(self.qkv, self.out):
            q, k, v = qkv(x).view(B, T, 3, self.n_heads, self.dh).permute(2, 0, 3, 1, 4)
            # written out: torch's scaled_dot_product_attention is slower here on the CPU (187 ms
            # against 110 ms per step, 3 x 4 heads, d_model 64, batch 1024)
            a = (q @ k.transpose(-1, -2) / math.sqrt(self.dh)).masked_fill(mask, float("-inf")).softmax(-1)
            x = x + out((a @ v).transpose(1, 2).reshape(B, T, -1))
        return self.W_U(x[:, -1])


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
