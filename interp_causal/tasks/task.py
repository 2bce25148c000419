"""The in-context causal task: a fixed graph, a fresh transition table per sequence (docs/science.md §1)."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import torch

from interp_causal.tasks.graph import CausalGraph


@dataclass(frozen=True)
class TaskBatch:
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

    def __getitem__(self, index: slice | torch.Tensor) -> "TaskBatch":
        return TaskBatch(self.tokens[index], self.target[index], self.parent_tokens[index])


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

    def sample(self, n: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Draw ``n`` sequences, each with its own transition tables, vectorised over the batch.

        What is preserved (the fast path; ``sample_from_tables(draw_tables(n))`` is the slow,
        literal one and draws the same distribution):

        - Single-parent graphs (chain, icl, trees): exactly the distribution of
          ``(tokens, target)`` of the literal sampler. The full table is drawn (by an exact
          log-space gamma sampler), roots follow its stationary distribution (computed by the
          subtraction-free GTH elimination), the query is uniform, ``target = pi(. | query)``.
        - Other graphs (several parents; roots and query uniform): ``tokens`` have exactly the
          literal sampler's distribution, drawn without the tables by the Polya-urn
          (Dirichlet-multinomial) predictive of each table row. ``target`` is the posterior mean
          of the true row given the tokens, ``E[pi(. | s_P(target)) | tokens]``, which is the
          Bayes estimator ``bayes(tokens, task)``. The loss is linear in the target, so for any
          model ``f`` the expected loss ``E[-sum_s' y(s') log f(tokens)_s']`` and its expected
          gradient are unchanged; per batch the loss has less variance. The expected Bayes loss
          is unchanged too (a batch's Bayes loss is then the mean entropy of the estimator).

        Seeded: the same ``generator`` state and ``n`` give the same batch. Single-parent graphs
        are drawn in C where ``tasks/sampler.c`` is built (:func:`_tree_in_c`), from their own
        stream seeded by ``generator``: the same distribution as the torch ops that run where it
        is not (``INTERP_CAUSAL_NATIVE=0``), but other draws.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        graph = self.graph
        lib = sampler_library()
        if graph.is_single_parent and lib is not None:  # the whole sampler in C, its own stream
            tokens, target = _tree_in_c(lib, graph, self.vocab_size, self.alpha, n, generator)
            return TaskBatch(tokens, target, parent_tokens(tokens, graph))
        if graph.is_single_parent:
            draw, per_seq = self._sample_single_parent, self.vocab_size**2
        else:
            # the urn's per-position work is small: bigger chunks amortise the per-op overhead
            draw, per_seq = self._sample_urn, max(self.vocab_size ** (k + 1) for k in self._degrees()) // 4
        chunk = max(1, min(n, _CHUNK_ELEMENTS // max(1, per_seq)))
        parts = [draw(min(chunk, n - start), generator) for start in range(0, n, chunk)]
        tokens = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
        target = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts])
        return TaskBatch(tokens, target, parent_tokens(tokens, graph))

    def _degrees(self) -> list[int]:
        graph = self.graph
        return sorted({len(p) for p in graph.parents if p} | {len(graph.target_parents)})

    def _sample_single_parent(self, n: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact fast sampler of a single-parent graph in torch ops: ``(tokens [n, T], target [n, S])``
        (where ``tasks/sampler.c`` is built, :func:`_tree_in_c` draws the same distribution instead)."""
        graph, S, T = self.graph, self.vocab_size, self.seq_len
        # Rows of the table, unnormalised, each scaled so that its largest entry is 1 (no underflow
        # of a whole row, whatever alpha): G[b, r] is proportional to pi_b(. | r).
        logits = _log_gamma(n * S * S, self.alpha, generator).view(n, S, S)
        G = logits.sub_(logits.amax(-1, keepdim=True)).exp_()
        u = torch.rand(n, T, generator=generator)
        tokens = torch.empty(n, T, dtype=torch.long)
        query = graph.query_position
        if query is not None:
            tokens[:, query] = torch.randint(0, S, (n,), generator=generator)
        cdf = G.cumsum(-1).view(n * S, S)  # unnormalised inverse-CDF tables, row b * S + r
        base = torch.arange(0, n * S, S)
        roots = [i for i, ps in enumerate(graph.parents) if not ps and i != query]
        if query is not None:  # read the target row now: the stationary solve overwrites G
            target = G.view(n * S, S).index_select(0, base + tokens[:, query])
        else:
            kept = G.clone().view(n * S, S)
        if roots:
            mu = _stationary_gth(G, cdf[:, -1].view(n, S))  # overwrites G
            mu_cdf = mu.cumsum(-1)
            r = torch.tensor(roots)
            draws = (mu_cdf[:, None, :] < (u[:, r] * mu_cdf[:, -1:])[:, :, None]).sum(-1)
            tokens[:, r] = draws.clamp_max_(S - 1)
        for level, parent in _levels(graph):  # every position of a level at once: their parents are drawn
            rows = cdf.index_select(0, (base[:, None] + tokens[:, parent]).view(-1)).view(n, len(level), S)
            tokens[:, level] = (rows < u[:, level, None] * rows[:, :, -1:]).sum(-1).clamp_max_(S - 1)
        if query is None:
            target = kept.index_select(0, base + tokens[:, graph.target_parents[0]])
        return tokens, target / target.sum(-1, keepdim=True)

    def _sample_urn(self, n: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens by the Polya urn of every table row, target = posterior mean of its row. The
        draws after the random numbers run in C where it is built (``tasks/sampler.c``: the same
        arithmetic, the same bits; a two-parent pool 2.5x faster), else in torch ops."""
        graph, S, T, alpha = self.graph, self.vocab_size, self.seq_len, self.alpha
        tokens = torch.empty(n, T, dtype=torch.long)
        roots = [i for i, ps in enumerate(graph.parents) if not ps]
        if roots:
            tokens[:, roots] = torch.randint(0, S, (n, len(roots)), generator=generator)
        u = torch.rand(n, T, generator=generator)
        lib = sampler_library()
        if lib is not None:
            counts = _urn_in_c(lib, graph, S, self._degrees(), alpha, u, tokens)
            post = counts.add_(alpha)
            return tokens, post / post.sum(-1, keepdim=True)
        counts = {k: torch.zeros(n, S ** (k + 1)) for k in self._degrees()}  # [n, rows * S]
        cols = torch.arange(S)
        ones = torch.ones(n, 1)
        for i, ps in enumerate(graph.parents):
            if not ps:
                continue
            table = counts[len(ps)]
            start = _row_start(tokens, ps, S)  # [n]
            cdf = table.gather(1, start[:, None] + cols).add_(alpha).cumsum_(-1)
            s = (cdf < u[:, i : i + 1] * cdf[:, -1:]).sum(-1).clamp_max_(S - 1)
            tokens[:, i] = s
            table.scatter_add_(1, (start + s)[:, None], ones)
        tp = list(graph.target_parents)
        table = counts[len(tp)]
        start = _row_start(tokens, tp, S)
        post = table.gather(1, start[:, None] + cols).add_(alpha)
        return tokens, post / post.sum(-1, keepdim=True)

    def draw_tables(self, n: int, generator: torch.Generator | None = None) -> dict[int, torch.Tensor]:
        """Per-sequence transition tables: ``{k: [n, S^k, S]}`` for every in-degree ``k`` in use.

        Row ``r`` of table ``k`` is ``pi(. | parents)`` for the parents' tokens read as a base-``S``
        number, first parent most significant. Rows are i.i.d. ``Dirichlet(alpha * 1_S)``.
        """
        graph, S = self.graph, self.vocab_size
        degrees = sorted({len(p) for p in graph.parents if p} | {len(graph.target_parents)})
        return {k: dirichlet((n, S**k), S, self.alpha, generator) for k in degrees}

    def sample_from_tables(self, tables: dict[int, torch.Tensor], generator: torch.Generator | None = None) -> TaskBatch:
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
        return TaskBatch(tokens, target, parent_tokens(tokens, graph))


def _levels(graph: CausalGraph) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A single-parent graph's non-root positions by depth, ``(positions, their parents)`` per
    level: each level's tokens depend only on earlier levels', so the sampler draws a level in one
    pass (a random tree of 20 positions has about 4 levels; the chain has one per position)."""
    depth: dict[int, int] = {}
    levels: dict[int, list[int]] = {}
    for i, ps in enumerate(graph.parents):
        depth[i] = 0 if not ps else depth[ps[0]] + 1
        if ps:
            levels.setdefault(depth[i], []).append(i)
    return [(torch.tensor(level), torch.tensor([graph.parents[i][0] for i in level])) for _, level in sorted(levels.items())]


def _row_index(parent_tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Row of a ``S^k x S`` table for parent tokens ``[n, k]`` (first parent most significant)."""
    idx = parent_tokens[:, 0].clone()
    for m in range(1, parent_tokens.shape[1]):
        idx = idx * vocab_size + parent_tokens[:, m]
    return idx


def _row_start(tokens: torch.Tensor, parents: tuple[int, ...] | list[int], vocab_size: int) -> torch.Tensor:
    """``S * _row_index(tokens[:, parents])``: the first flat entry of each sequence's table row."""
    idx = tokens[:, parents[0]]
    for p in parents[1:]:
        idx = idx * vocab_size + tokens[:, p]
    return idx * vocab_size


def parent_tokens(tokens: torch.Tensor, graph: CausalGraph) -> torch.Tensor:
    """``[n, T, k_max]`` tokens at each position's parents, ``-1`` where there is none."""
    index = graph.parent_index()  # [T, k]
    n, T, k = tokens.shape[0], index.shape[0], index.shape[1]
    # gather, not index_select along dim 1: 1.2 ms against 10.6 for the two-parent task's 16384 x 32
    gathered = tokens.gather(1, index.clamp_min(0).view(1, -1).expand(n, -1)).view(n, T, k)
    return gathered.masked_fill_(index < 0, -1)


SAMPLER_SOURCE = Path(__file__).with_name("sampler.c")


def _declare_sampler(lib: ctypes.CDLL) -> None:
    i, p = ctypes.c_int, ctypes.c_void_p
    lib.urn_draw.argtypes = [i, i, i, ctypes.c_float, i, p, p, p, i, i, p, i, p, p, p]
    lib.tree_sample.argtypes = [i, i, i, ctypes.c_float, ctypes.c_uint64, i, i, p, i, p, p, i, i, p, p]
    lib.urn_draw.restype = lib.tree_sample.restype = i


def sampler_library() -> ctypes.CDLL | None:
    """``tasks/sampler.c`` compiled (:mod:`interp_causal.compiled`), or None."""
    from interp_causal import compiled

    return compiled.library(SAMPLER_SOURCE, _declare_sampler)


def _int32(values) -> torch.Tensor:
    return torch.tensor(list(values) or [0], dtype=torch.int32)


def _tree_in_c(lib: ctypes.CDLL, graph: CausalGraph, S: int, alpha: float, n: int,
               generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [n, T], target [n, S])`` of a single-parent graph by ``sampler.c``'s ``tree_sample``,
    on torch's threads. Its random numbers are its own, from one seed drawn from ``generator``: the
    batch is seeded (and a resumed run draws the same ones), but it is not the torch ops' batch.
    8x faster than them for the paper's chain (one thread); the result does not depend on the threads."""
    query = graph.query_position
    roots = [i for i, ps in enumerate(graph.parents) if not ps and i != query]
    order = [int(i) for level, _ in _levels(graph) for i in level]
    parent = [ps[0] if ps else 0 for ps in graph.parents]
    seed = int(torch.empty((), dtype=torch.long).random_(generator=generator))  # 63 bits
    T = graph.seq_len
    tokens, target = torch.empty(n, T, dtype=torch.long), torch.empty(n, S)
    r, o, par = _int32(roots), _int32(order), _int32(parent)
    code = lib.tree_sample(n, T, S, alpha, seed, torch.get_num_threads(), len(roots), r.data_ptr(), len(order),
                           o.data_ptr(), par.data_ptr(), -1 if query is None else query, graph.target_parents[0],
                           tokens.data_ptr(), target.data_ptr())
    if code:
        raise MemoryError("interp_causal: the sampler could not allocate its scratch memory")
    return tokens, target


def _urn_in_c(lib: ctypes.CDLL, graph: CausalGraph, S: int, degrees: list[int], alpha: float, u: torch.Tensor,
              tokens: torch.Tensor) -> torch.Tensor:
    """Fill ``tokens`` ``[n, T]`` (roots given) by ``sampler.c``'s ``urn_draw``; return the counts of each sequence's
    target row ``[n, S]``. Each in-degree's count table sits at its own offset of one scratch."""
    offsets, size = {}, 0
    for k in degrees:
        offsets[k], size = size, size + S ** (k + 1)
    kmax = max(1, max(len(ps) for ps in graph.parents))
    npar = _int32(len(ps) for ps in graph.parents)
    par = _int32(v for ps in graph.parents for v in list(ps) + [0] * (kmax - len(ps)))  # [T, kmax]
    slot = _int32(offsets[len(ps)] if ps else 0 for ps in graph.parents)
    tp = list(graph.target_parents)
    tpar = _int32(tp)
    n, T = tokens.shape
    u, counts = u.contiguous(), torch.empty(n, S)
    code = lib.urn_draw(n, T, S, alpha, kmax, npar.data_ptr(), par.data_ptr(), slot.data_ptr(), size, len(tp),
                        tpar.data_ptr(), offsets[len(tp)], u.data_ptr(), tokens.data_ptr(), counts.data_ptr())
    if code:
        raise MemoryError("interp_causal: the urn sampler could not allocate its scratch memory")
    return counts


# Elements of the largest per-chunk table the fast sampler builds (chunks stay in cache).
_CHUNK_ELEMENTS = 2**19


def _log_gamma(size: int, alpha: float, generator: torch.Generator | None) -> torch.Tensor:
    """``size`` i.i.d. draws of ``log Gamma(alpha) + c`` (float32, one common constant ``c``).

    For ``alpha < 1`` without ever forming the gamma variable (which underflows): by Stuart's
    theorem ``Gamma(alpha) = Gamma(1 + alpha) * U^(1/alpha)``. ``Gamma(1 + alpha)`` is drawn by
    rejection from the proposal ``(1 + alpha) E``, ``E ~ Exp(1)``: accept when
    ``log V <= alpha (log E - E + 1)`` (acceptance 95% at alpha = 0.1). Given acceptance,
    ``V / r(E)`` is again uniform and independent of ``E``, so it serves as the ``U``, and
    ``log Gamma(alpha) = log(1 + alpha) - 1 + E + log(V) / alpha``; the constant is dropped.
    Two uniforms per draw; rejected draws are redrawn.
    """
    if alpha >= 1.0:
        conc = torch.full((size,), float(alpha), dtype=torch.float64)
        return torch._standard_gamma(conc, generator=generator).log_().float()
    e = torch.rand(size, generator=generator).neg_().log1p_().neg_()  # Exp(1), from 1 - U in (0, 1]
    log_v = torch.rand(size, generator=generator).neg_().log1p_()  # log V, V uniform on (0, 1]
    accept = log_v <= (e.log() - e + 1.0).mul_(alpha)
    out = log_v.div_(alpha).add_(e)
    todo = (~accept).nonzero().squeeze(1)
    while todo.numel():
        m = todo.numel()
        e = torch.rand(m, generator=generator).neg_().log1p_().neg_()
        log_v = torch.rand(m, generator=generator).neg_().log1p_()
        accept = log_v <= (e.log() - e + 1.0).mul_(alpha)
        out[todo[accept]] = (log_v.div_(alpha).add_(e))[accept]
        todo = todo[~accept]
    return out


def _stationary_gth(rates: torch.Tensor, row_sums: torch.Tensor) -> torch.Tensor:
    """Stationary distributions ``[n, S]`` of the chains ``pi = rates / row_sums`` (rows of
    ``rates`` ``[n, S, S]`` unnormalised), by Grassmann-Taksar-Heyman state elimination: no
    subtractions, so accurate to a few ulps even for nearly reducible chains. Overwrites ``rates``.

    GTH on the unnormalised rates gives the stationary vector ``nu`` of the continuous-time chain
    with those rates (diagonal ignored); ``mu`` is proportional to ``nu * row_sums``.
    """
    A = rates
    n, S, _ = A.shape
    for k in range(S - 1, 0, -1):
        out = A[:, k, :k].sum(-1).clamp_min_(torch.finfo(A.dtype).tiny)  # [n] rate from k to the rest
        col = A[:, :k, k] / out[:, None]  # [n, k]
        A[:, :k, :k].addcmul_(col[:, :, None], A[:, k : k + 1, :k])
        A[:, :k, k] = col
    nu = torch.empty(n, S, dtype=A.dtype)
    nu[:, 0] = 1.0
    for k in range(1, S):
        nu[:, k] = (nu[:, :k] * A[:, :k, k]).sum(-1)
    mu = nu * row_sums
    return mu / mu.sum(-1, keepdim=True)
