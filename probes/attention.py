"""Attention against a given graph: parent attention, previous-token attention, and the
TransformerLens ``head_detector`` "mul" score they share with the token-pattern probes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from probes.base import ForwardProbe, ProbeBatch, Stats, layer_of, pattern_site
from probes.parents import chain_parents, check_parents, parent_matrix, slot_suffixes
from probes.records import Record
from probes.sites import ModelDims


def pattern_score(
    pattern: torch.Tensor,
    detection: torch.Tensor,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> torch.Tensor:
    """TransformerLens ``detect_head`` score with ``error_measure="mul"``, batched: ``[head]``.

    pattern: ``[batch, head, q, k]``; detection: ``[q, k]`` or ``[batch, q, k]`` (0/1). Per sequence
    and head the score is ``sum(pattern * detection) / sum(pattern)`` after zeroing column 0
    (``exclude_bos``) and the diagonal (``exclude_current_token``); it is then averaged over the
    batch, as ``detect_head`` averages over a list of sequences.
    """
    return sequence_scores(pattern, detection, exclude_bos, exclude_current_token).mean(0)


def sequence_scores(
    pattern: torch.Tensor, detection: torch.Tensor, exclude_bos: bool = False, exclude_current_token: bool = False
) -> torch.Tensor:
    """The per-sequence scores of :func:`pattern_score`, ``[batch, head]``."""
    p = pattern.float()
    T = p.shape[-1]
    if exclude_bos or exclude_current_token:
        keep = torch.ones(T, T, device=p.device)
        if exclude_bos:
            keep[:, 0] = 0
        if exclude_current_token:
            keep.fill_diagonal_(0)
        p = p * keep
    d = detection.float().to(p.device)
    d = d[:, None] if d.ndim == 3 else d  # [batch, 1, q, k] broadcasts over heads
    return (p * d).sum((-1, -2)) / p.sum((-1, -2))


def parent_attention_stats(layer: int, pattern: torch.Tensor, parents: Sequence[Sequence[int]]) -> Stats:
    """Additive statistics of one layer's pattern ``[batch, head, T, T]`` against a parent list,
    per parent slot: attention on the parents and argmax hits, summed over the batch by position."""
    p = pattern.float()
    T = p.shape[-1]
    q = torch.arange(T, device=p.device)
    out: Stats = {(layer, "n"): torch.tensor(float(p.shape[0]), dtype=torch.float64)}
    for slot, _ in slot_suffixes(parents):
        m = parent_matrix(parents, slot).to(p.device)  # [T, T]
        out[(layer, slot, "mass")] = (p * m).sum(-1).sum(0).double().cpu()  # [head, T]
        out[(layer, slot, "hits")] = m[q, p.argmax(-1)].sum(0).double().cpu()  # [head, T]: argmax on a parent
        if slot is None:
            out[(layer, slot, "score")] = sequence_scores(p, m).sum(0).double().cpu()  # [head]
    return out


def parent_attention_records(
    name: str, layer: int, pattern: torch.Tensor, parents: Sequence[Sequence[int]], stats: Stats | None = None
) -> list[Record]:
    """Records of one layer's pattern ``[batch, head, T, T]`` (or of its summed ``stats``) against a parent list.

    Per head: ``mass`` (attention on the parents, averaged over the batch and over the positions
    that have parents; ``extra["per_position"]`` gives it per query position, ``None`` for
    roots), ``argmax_acc`` (how often the row's argmax is a parent) and ``score`` (the
    ``head_detector`` "mul" score with the adjacency as detection pattern). With several parents
    per position the same metrics are also reported per parent slot (``mass_parent0``, ...: the
    r-th listed parent of each position, over the positions that have one).
    """
    stats = parent_attention_stats(layer, pattern, parents) if stats is None else stats
    n = float(stats[(layer, "n")])
    records: list[Record] = []
    for slot, suffix in slot_suffixes(parents):
        rows = parent_matrix(parents, slot).sum(-1) > 0
        if not rows.any():
            continue
        mass_by_pos = stats[(layer, slot, "mass")] / n  # [head, T]
        mass = mass_by_pos[:, rows].mean(-1)
        acc = stats[(layer, slot, "hits")][:, rows].sum(-1) / (n * int(rows.sum()))
        score = stats[(layer, slot, "score")] / n if slot is None else None
        for h in range(mass_by_pos.shape[0]):
            per_pos = [float(v) if r else None for v, r in zip(mass_by_pos[h].tolist(), rows.tolist())]
            records.append(Record(name, layer, h, "mass" + suffix, float(mass[h]), {"per_position": per_pos}))
            records.append(Record(name, layer, h, "argmax_acc" + suffix, float(acc[h])))
            if score is not None:
                records.append(Record(name, layer, h, "score", float(score[h])))
    return records


class _GraphAttention(ForwardProbe):
    """Attention of every head against a parent list, per layer: see :func:`parent_attention_records`.
    Subclasses say which parent list goes with a sequence length."""

    def parents_for(self, seq_len: int) -> list[list[int]]:
        raise NotImplementedError

    def sites(self, dims: ModelDims) -> list[str]:
        return [pattern_site(l) for l in self.layer_list(dims)]

    def check(self, batch: ProbeBatch) -> None:
        check_parents(self.parents_for(batch.seq_len), batch.seq_len, name=f"{self.name}: parents")

    def stats(self, site: str, act: torch.Tensor, chunk: ProbeBatch) -> Stats:
        return parent_attention_stats(layer_of(site), act, self.parents_for(chunk.seq_len))

    def records(self, stats: Stats, batch: ProbeBatch) -> list[Record]:
        parents = self.parents_for(batch.seq_len)
        out: list[Record] = []
        for l in self.layer_list(batch.dims):
            out += parent_attention_records(self.name, l, None, parents, stats)
        return out


class ParentAttention(_GraphAttention):
    """How much each head attends from every position to its parents in a given graph.

    parents: one list of earlier positions per position (``[]`` for roots), as long as the
    sequences probed. Reads ``blocks.{l}.attn.hook_pattern``. Metrics: see
    :func:`parent_attention_records`.
    """

    name = "parent_attention"

    def __init__(self, parents: Sequence[Sequence[int]], layers: Sequence[int] | None = None):
        super().__init__(layers)
        self.parents = check_parents(parents)

    def parents_for(self, seq_len: int) -> list[list[int]]:
        return self.parents


class PreviousTokenAttention(_GraphAttention):
    """Parent attention on the chain graph ``parents[i] = [i - 1]``, for any sequence length.

    Its ``score`` equals TransformerLens ``detect_head(..., "previous_token_head")`` ("mul").
    """

    name = "previous_token"

    def parents_for(self, seq_len: int) -> list[list[int]]:
        return chain_parents(seq_len)
