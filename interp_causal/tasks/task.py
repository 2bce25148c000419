"""The in-context causal task: a fixed graph, a fresh transition table per sequence (PAPER.md §1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp_causal.tasks.graph import CausalGraph


@dataclass(frozen=True)
class Batch:
    """One sampled batch.

    tokens: ``[n, T]`` int64. target: ``[n, S]`` the true next-token distribution
    ``pi(. | s_{P(target)})``. parent_tokens: ``[n, T, k_max]`` the tokens at each position's
    parents, ``-1`` where a position has fewer parents (roots: all ``-1``).
    """

    tokens: torch.Tensor
    target: torch.Tensor
    parent_tokens: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index: slice | torch.Tensor) -> "Batch":
        return Batch(self.tokens[index], self.target[index], self.parent_tokens[index])


def dirichlet(shape: tuple[int, ...], vocab_size: int, alpha: float, generator: torch.Generator | None) -> torch.Tensor:
    """``[*shape, S]`` rows drawn i.i.d. from ``Dirichlet(alpha * 1_S)``.

    Drawn in float64: with alpha = 0.1 a float32 gamma draw underflows to 0 about once in
    6000 draws, which can zero a whole row or make a chain reducible.
    """
    conc = torch.full((*shape, vocab_size), float(alpha), dtype=torch.float64)
    g = torch._standard_gamma(conc, generator=generator)
    return g / g.sum(-1, keepdim=True)


def stationary(pi: torch.Tensor) -> torch.Tensor:
    """Stationary distributions ``mu`` with ``mu pi = mu`` of a batch of stochastic matrices ``[n, S, S]``."""
    n, S, _ = pi.shape
    system = pi.transpose(1, 2) - torch.eye(S, dtype=pi.dtype)
    system[:, -1, :] = 1.0  # replace one (redundant) balance equation by sum(mu) = 1
    rhs = torch.zeros(n, S, 1, dtype=pi.dtype)
    rhs[:, -1] = 1.0
    mu = torch.linalg.solve(system, rhs).squeeze(-1).clamp_min(0.0)
    return mu / mu.sum(-1, keepdim=True)


def categorical(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of ``probs`` ``[n, S]`` by inverse CDF (one uniform per row)."""
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=probs.dtype)
    cdf = probs.cumsum(-1)
    return (cdf < u * cdf[:, -1:]).sum(-1).clamp_max(probs.shape[-1] - 1)


class InContextTask:
    """Graph, vocabulary size ``S`` and Dirichlet concentration ``alpha`` (0.1 in the paper)."""

    def __init__(self, graph: CausalGraph, vocab_size: int = 10, alpha: float = 0.1) -> None:
        if not isinstance(graph, CausalGraph):
            raise TypeError(f"graph: expected a CausalGraph, got {type(graph).__name__}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size: expected an int >= 2, got {vocab_size!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"alpha: expected a positive number, got {alpha!r}")
        if vocab_size ** graph.max_in_degree > 2**20:
            raise ValueError(
                f"vocab_size: {vocab_size}^{graph.max_in_degree} transition rows per sequence is too many; "
                "use a smaller vocabulary or fewer parents"
            )
        self.graph = graph
        self.vocab_size = vocab_size
        self.alpha = float(alpha)

    @property
    def seq_len(self) -> int:
        return self.graph.seq_len

    def __repr__(self) -> str:
        return f"InContextTask(graph={self.graph.name!r}, seq_len={self.seq_len}, vocab_size={self.vocab_size}, alpha={self.alpha})"

    def to_dict(self) -> dict:
        """JSON-ready description from which ``from_dict`` rebuilds the same task."""
        g = self.graph
        return {
            "graph": g.name,
            "parents": g.parent_lists(),
            "target_parents": list(g.target_parents),
            "vocab_size": self.vocab_size,
            "alpha": self.alpha,
        }

    @classmethod
    def from_dict(cls, spec: dict) -> "InContextTask":
        graph = CausalGraph(
            tuple(tuple(p) for p in spec["parents"]), tuple(spec["target_parents"]), name=spec.get("graph", "custom")
        )
        return cls(graph, int(spec["vocab_size"]), float(spec["alpha"]))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Batch:
        """Draw ``n`` sequences, each with its own transition tables, vectorised over the batch."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        return self.sample_from_tables(self.draw_tables(n, generator), generator)

    def draw_tables(self, n: int, generator: torch.Generator | None = None) -> dict[int, torch.Tensor]:
        """Per-sequence transition tables: ``{k: [n, S^k, S]}`` for every in-degree ``k`` in use.

        Row ``r`` of table ``k`` is ``pi(. | parents)`` for the parents' tokens read as a base-``S``
        number, first parent most significant. Rows are i.i.d. ``Dirichlet(alpha * 1_S)``.
        """
        graph, S = self.graph, self.vocab_size
        degrees = sorted({len(p) for p in graph.parents if p} | {len(graph.target_parents)})
        return {k: dirichlet((n, S**k), S, self.alpha, generator) for k in degrees}

    def sample_from_tables(self, tables: dict[int, torch.Tensor], generator: torch.Generator | None = None) -> Batch:
        """Sample one sequence per row of the given tables (see ``draw_tables``).

        Roots follow the stationary distribution of the sequence's table for single-parent
        graphs (the query position and multi-parent roots are uniform), as in the paper.
        """
        graph, S = self.graph, self.vocab_size
        n = next(iter(tables.values())).shape[0]
        uniform = torch.full((n, S), 1.0 / S, dtype=torch.float64)
        root = stationary(tables[1].to(torch.float64)) if graph.is_single_parent else uniform

        tokens = torch.empty(n, graph.seq_len, dtype=torch.long)
        rows = torch.arange(n)
        for i, ps in enumerate(graph.parents):
            if ps:
                probs = tables[len(ps)][rows, _row_index(tokens[:, list(ps)], S)]
            else:
                probs = uniform if i == graph.query_position else root
            tokens[:, i] = categorical(probs.to(torch.float64), generator)

        tp = list(graph.target_parents)
        target = tables[len(tp)][rows, _row_index(tokens[:, tp], S)].to(torch.float32)
        return Batch(tokens, target, parent_tokens(tokens, graph))


def _row_index(parent_tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Row of a ``S^k x S`` table for parent tokens ``[n, k]`` (first parent most significant)."""
    idx = parent_tokens[:, 0].clone()
    for m in range(1, parent_tokens.shape[1]):
        idx = idx * vocab_size + parent_tokens[:, m]
    return idx


def parent_tokens(tokens: torch.Tensor, graph: CausalGraph) -> torch.Tensor:
    """``[n, T, k_max]`` tokens at each position's parents, ``-1`` where there is none."""
    index = graph.parent_index()  # [T, k]
    gathered = tokens[:, index.clamp_min(0)]  # [n, T, k]
    return torch.where(index >= 0, gathered, torch.full_like(gathered, -1))
