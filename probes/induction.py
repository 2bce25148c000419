"""Induction: the classic token-pattern scores and the graph-aware score of the in-context causal task.

Classic (Olsson et al. 2022; TransformerLens ``head_detector``): on any batch, how much a head
attends from position ``i`` to the token *after* an earlier occurrence of ``s_i`` (prefix
matching), or to the earlier occurrence itself (duplicate token); on repeated random tokens, to
``i - period + 1`` (the induction stripe).

Graph-aware (Nichani et al. 2024): from the query (last position), the attention mass on the
positions ``j`` whose parent token equals the query token, ``s_{p(j)} = s_{T-1}``. With several
parents the query side is a list of positions ``query_parents`` (for the multi-parent task, the
target's parents ``[(T-1)//2, T-1]``); a position ``j`` matches when it has exactly that many
parents and ``s_{P(j)[r]} = s_{query_parents[r]}`` for every slot ``r``: the set the Bayes estimator
counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from probes.attention import sequence_scores
from probes.base import ForwardProbe, ProbeBatch, Stats, layer_of, pattern_site
from probes.parents import check_parents
from probes.records import Record
from probes.sites import ModelDims


def duplicate_token_pattern(tokens: torch.Tensor) -> torch.Tensor:
    """``[batch, T, T]``: 1 where ``j < i`` and ``s_j = s_i`` (TransformerLens's duplicate-token pattern)."""
    eq = tokens[:, :, None] == tokens[:, None, :]
    return (eq & _strictly_lower(tokens.shape[1], tokens.device)).float()


def induction_pattern(tokens: torch.Tensor) -> torch.Tensor:
    """``[batch, T, T]``: 1 where ``1 <= j <= i`` and ``s_{j-1} = s_i`` (TransformerLens's induction pattern)."""
    T = tokens.shape[1]
    out = torch.zeros(tokens.shape[0], T, T, device=tokens.device)
    out[:, :, 1:] = (tokens[:, :, None] == tokens[:, None, :-1]).float()
    return out * torch.ones(T, T, device=tokens.device).tril()


def repeated_random_tokens(
    batch: int, period: int, vocab_size: int, generator: torch.Generator | None = None, bos: int | None = None
) -> torch.Tensor:
    """``[batch, 2 * period (+1)]``: random tokens repeated once, optionally after a ``bos`` token."""
    first = torch.randint(0, vocab_size, (batch, period), generator=generator)
    parts = [first, first]
    if bos is not None:
        parts.insert(0, torch.full((batch, 1), bos, dtype=torch.long))
    return torch.cat(parts, dim=1)


def _strictly_lower(T: int, device: torch.device | None = None) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool, device=device).tril(-1)


class InductionProbe(ForwardProbe):
    """Classic induction-related scores per layer and head.

    Metrics: ``prefix_matching`` and ``duplicate_token``, the TransformerLens ``detect_head``
    "mul" scores of ``induction_pattern`` / ``duplicate_token_pattern`` (they equal
    ``detect_head(..., "induction_head")`` / ``"duplicate_token_head"``); with ``period`` set, for
    batches whose last ``period`` positions repeat the ``period`` before them
    (:func:`repeated_random_tokens`), ``repeat``: the mean attention from each position ``i`` of
    the repeat to ``i - period + 1``.
    """

    name = "induction"

    def __init__(
        self,
        period: int | None = None,
        layers: Sequence[int] | None = None,
        exclude_bos: bool = False,
        exclude_current_token: bool = False,
    ):
        super().__init__(layers)
        if period is not None and (isinstance(period, bool) or not isinstance(period, int) or period < 1):
            raise ValueError(f"period: expected None or an int >= 1, got {period!r}")
        self.period = period
        self.exclude_bos = exclude_bos
        self.exclude_current_token = exclude_current_token

    def sites(self, dims: ModelDims) -> list[str]:
        return [pattern_site(l) for l in self.layer_list(dims)]

    def check(self, batch: ProbeBatch) -> None:
        if self.period is not None:
            T = batch.seq_len
            if 2 * self.period > T:
                raise ValueError(f"period: {self.period} is more than half the sequence length {T}")
            tail = batch.tokens[:, T - self.period :]
            if not torch.equal(tail, batch.tokens[:, T - 2 * self.period : T - self.period]):
                raise ValueError(f"tokens: with period={self.period} the last {self.period} positions must repeat the ones before them")

    def metrics(self) -> list[str]:
        return ["prefix_matching", "duplicate_token"] + (["repeat"] if self.period is not None else [])

    def stats(self, site: str, act: torch.Tensor, chunk: ProbeBatch) -> Stats:
        tokens, l, p = chunk.tokens, layer_of(site), act.float()
        kw = dict(exclude_bos=self.exclude_bos, exclude_current_token=self.exclude_current_token)
        per_sequence = {"prefix_matching": sequence_scores(p, induction_pattern(tokens), **kw),
                        "duplicate_token": sequence_scores(p, duplicate_token_pattern(tokens), **kw)}
        if self.period is not None:
            T = p.shape[-1]
            i = torch.arange(T - self.period, T, device=p.device)
            per_sequence["repeat"] = p[:, :, i, i - self.period + 1].mean(-1)
        out: Stats = {(l, m): v.sum(0).double().cpu() for m, v in per_sequence.items()}
        out[(l, "n")] = torch.tensor(float(p.shape[0]), dtype=torch.float64)
        return out

    def records(self, stats: Stats, batch: ProbeBatch) -> list[Record]:
        out: list[Record] = []
        for l in self.layer_list(batch.dims):
            n = float(stats[(l, "n")])
            for metric in self.metrics():
                v = stats[(l, metric)] / n
                out += [Record(self.name, l, h, metric, float(v[h])) for h in range(v.shape[0])]
        return out


def graph_match_mask(
    tokens: torch.Tensor, parents: Sequence[Sequence[int]], query_parents: Sequence[int]
) -> torch.Tensor:
    """``[batch, T]`` bool: positions ``j`` with ``len(P(j)) = len(query_parents)`` and
    ``s_{P(j)[r]} = s_{query_parents[r]}`` for every slot ``r``."""
    k = len(query_parents)
    keys = [j for j, ps in enumerate(parents) if len(ps) == k and k > 0]
    mask = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
    if keys:
        key_parents = torch.tensor([parents[j] for j in keys], device=tokens.device)  # [n_keys, k]
        want = tokens[:, list(query_parents)]  # [batch, k]
        mask[:, keys] = (tokens[:, key_parents] == want[:, None, :]).all(-1)
    return mask


class GraphInductionProbe(ForwardProbe):
    """Graph-aware induction: attention mass from the last position onto positions whose parent
    tokens match the query (see the module docstring), per layer and head.

    parents: the task's parent list (as long as the sequences). query_parents: positions whose
    tokens the query stands for; default ``[T-1]``, the query token itself. Metrics, averaged over
    the sequences that have at least one matching position (their count in
    ``extra["n_sequences"]``; NaN if none):

    - ``mass``: the query's attention on the matching positions;
    - ``self_mass``: the query's attention on itself;
    - ``context_mass``: the share of the attention it spends on the context (every position but
      its own) that lands on matching positions: ``mass / (1 - self_mass)`` when the query is no
      match itself.

    Why the last two: a trained model of the paper's task spends attention on the query itself as
    the Bayes estimator's pseudo-count. Its mass on ``N`` matches is then about
    ``N / (N + S alpha)`` (the estimator's weight on the counts), so ``mass`` stays well below 1 in
    a model that has learned the mechanism exactly, while ``context_mass`` approaches 1.
    """

    name = "graph_induction"

    def __init__(
        self,
        parents: Sequence[Sequence[int]],
        query_parents: Sequence[int] | None = None,
        layers: Sequence[int] | None = None,
    ):
        super().__init__(layers)
        self.parents = check_parents(parents)
        T = len(self.parents)
        qp = [T - 1] if query_parents is None else list(query_parents)
        if not qp or any(isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < T for p in qp):
            raise ValueError(f"query_parents: expected a non-empty list of positions in [0, {T}), got {query_parents!r}")
        self.query_parents = qp

    def sites(self, dims: ModelDims) -> list[str]:
        return [pattern_site(l) for l in self.layer_list(dims)]

    def check(self, batch: ProbeBatch) -> None:
        check_parents(self.parents, batch.seq_len, name=f"{self.name}: parents")

    METRICS = ("mass", "self_mass", "context_mass")

    def stats(self, site: str, act: torch.Tensor, chunk: ProbeBatch) -> Stats:
        mask = graph_match_mask(chunk.tokens, self.parents, self.query_parents).float()
        used = mask.sum(-1) > 0
        l = layer_of(site)
        p = act.float()[:, :, -1, :]  # [batch, head, k]: the query's row
        on_keys = p * mask.to(p.device)[:, None, :]  # [batch, head, k]
        on_self = p[..., -1]
        metrics = {
            "mass": on_keys.sum(-1),
            "self_mass": on_self,
            # the query's own position, a match only in graphs without a query, is not context
            "context_mass": on_keys[..., :-1].sum(-1) / (1.0 - on_self).clamp_min(1e-12),
        }
        out: Stats = {(l, m): v[used.to(v.device)].sum(0).double().cpu() for m, v in metrics.items()}
        out[(l, "n")] = used.sum().double().cpu()
        return out

    def records(self, stats: Stats, batch: ProbeBatch) -> list[Record]:
        out: list[Record] = []
        for l in self.layer_list(batch.dims):
            n = int(stats[(l, "n")])
            for metric in self.METRICS:
                total = stats[(l, metric)]
                mean = total / n if n else torch.full_like(total, float("nan"))
                out += [Record(self.name, l, h, metric, float(mean[h]), {"n_sequences": n}) for h in range(total.shape[0])]
        return out
