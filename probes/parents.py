"""Parent lists: the one way probes are told about a causal graph.

A graph over positions ``0..T-1`` is a list of ``T`` lists; ``parents[i]`` holds the earlier
positions ``i`` depends on, ``[]`` for a root. The chain (previous-token) graph is
``[[]] + [[i - 1] for i in range(1, T)]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def chain_parents(seq_len: int) -> list[list[int]]:
    """The previous-token graph on ``seq_len`` positions: ``parents[i] = [i - 1]``, position 0 a root."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len: expected an int >= 1, got {seq_len!r}")
    return [[]] + [[i - 1] for i in range(1, seq_len)]


def check_parents(parents: object, seq_len: int | None = None, name: str = "parents") -> list[list[int]]:
    """Validate a parent list and return it as plain ``list[list[int]]``.

    Every position's parents must be ints strictly earlier than the position; ``seq_len`` (when
    given) must equal ``len(parents)``. Errors name the bad position.
    """
    if isinstance(parents, (str, bytes)) or not isinstance(parents, Sequence):
        raise TypeError(f"{name}: expected a list of parent lists (one per position), got {type(parents).__name__}")
    out: list[list[int]] = []
    for i, ps in enumerate(parents):
        if isinstance(ps, (str, bytes)) or not isinstance(ps, Sequence):
            raise TypeError(f"{name}[{i}]: expected a list of earlier positions, got {ps!r}")
        row = []
        for p in ps:
            if isinstance(p, bool) or not isinstance(p, int):
                raise TypeError(f"{name}[{i}]: parents must be ints, got {p!r}")
            if not 0 <= p < i:
                raise ValueError(f"{name}[{i}]: parent {p} is not an earlier position (expected 0 <= p < {i})")
            if p in row:
                raise ValueError(f"{name}[{i}]: parent {p} is listed twice")
            row.append(p)
        out.append(row)
    if seq_len is not None and len(out) != seq_len:
        raise ValueError(f"{name}: expected one parent list per position ({seq_len}), got {len(out)}")
    return out


def parent_matrix(parents: Sequence[Sequence[int]], slot: int | None = None) -> torch.Tensor:
    """Adjacency ``[T, T]`` (float 0/1): ``M[i, j] = 1`` when ``j`` is a parent of ``i``.

    slot: keep only the ``slot``-th listed parent of each position (positions with fewer parents
    get an empty row); ``None`` keeps all parents.
    """
    T = len(parents)
    m = torch.zeros(T, T)
    for i, ps in enumerate(parents):
        chosen = ps if slot is None else ps[slot : slot + 1]
        for p in chosen:
            m[i, p] = 1.0
    return m


def max_parents(parents: Sequence[Sequence[int]]) -> int:
    """The most parents any one position has (0 for a graph of roots)."""
    return max((len(ps) for ps in parents), default=0)


def slot_suffixes(parents: Sequence[Sequence[int]]) -> list[tuple[int | None, str]]:
    """Metric suffixes per parent slot: ``[(None, "")]`` for single-parent graphs, and
    ``[(None, ""), (0, "_parent0"), (1, "_parent1"), ...]`` when some position has several parents.
    """
    k = max_parents(parents)
    return [(None, "")] + ([(r, f"_parent{r}") for r in range(k)] if k > 1 else [])
