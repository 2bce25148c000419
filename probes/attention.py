"""Attention against a given graph: parent attention, previous-token attention, and the
TransformerLens ``head_detector`` "mul" score they share with the token-pattern probes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from probes.base import ForwardProbe, ProbeBatch, pattern_site
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
    per_sequence = (p * d).sum((-1, -2)) / p.sum((-1, -2))  # [batch, head]
    return per_sequence.mean(0)


def parent_attention_records(
    name: str, layer: int, pattern: torch.Tensor, parents: Sequence[Sequence[int]]
) -> list[Record]:
    """Records of one layer's pattern ``[batch, head, T, T]`` against a parent list.

    Per head: ``mass`` (attention on the parents, averaged over the batch and over the positions
    that have parents; ``extra["per_position"]`` gives it per query position, ``None`` for
    roots), ``argmax_acc`` (how often the row's argmax is a parent) and ``score`` (the
    ``head_detector`` "mul" score with the adjacency as detection pattern). With several parents
    per position the same metrics are also reported per parent slot (``mass_parent0``, ...: the
    r-th listed parent of each position, over the positions that have one).
    """
    p = pattern.float()
    T = p.shape[-1]
    records: list[Record] = []
    q = torch.arange(T, device=p.device)
    for slot, suffix in slot_suffixes(parents):
        m = parent_matrix(parents, slot).to(p.device)  # [T, T]
        rows = m.sum(-1) > 0
        if not rows.any():
            continue
        mass_by_pos = (p * m).sum(-1).mean(0)  # [head, T]
        mass = mass_by_pos[:, rows].mean(-1)
        hit = m[q, p.argmax(-1)]  # [batch, head, T]: 1 where the row's argmax is a parent
        acc = hit[..., rows].mean((0, -1))
        score = pattern_score(p, m) if slot is None else None
        for h in range(p.shape[1]):
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

    def compute(self, acts: dict[str, torch.Tensor], batch: ProbeBatch) -> list[Record]:
        parents = self.parents_for(batch.seq_len)
        out: list[Record] = []
        for l in self.layer_list(batch.dims):
            out += parent_attention_records(self.name, l, acts[pattern_site(l)], parents)
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
