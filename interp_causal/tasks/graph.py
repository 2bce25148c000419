"""Latent causal graphs over sequence positions (docs/science.md §1).

A graph fixes, for every position ``i`` of a length-``T`` sequence, the parent set ``P(i)``
(positions strictly earlier than ``i``; empty for a root), and the parents of the *prediction
target*, a virtual position ``T`` after the sequence.

The paper's single-parent tasks end in a *query*: position ``T - 1`` is a root drawn uniformly
and the target is ``pi(. | s_{T-1})``, i.e. the target's only parent is ``T - 1``. Multi-parent
tasks have no query; the target's parents lie inside the sequence.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp_causal.names import GRAPHS as GRAPH_NAMES

Parents = tuple[tuple[int, ...], ...]


def _as_parent_tuple(value: object, where: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{where}: expected a list of earlier positions, got {value!r}")
    out = []
    for p in value:
        if isinstance(p, bool):
            raise TypeError(f"{where}: parent indices must be ints, got {p!r}")
        try:
            out.append(operator.index(p))  # ints, numpy and torch integer scalars
        except TypeError:
            raise TypeError(f"{where}: parent indices must be ints, got {p!r}") from None
    return tuple(out)


def _check_parent_lists(parents: tuple[tuple[int, ...], ...]) -> None:
    """Parents in range, earlier than their child (hence no cycles), and not repeated."""
    T = len(parents)
    for i, ps in enumerate(parents):
        for p in ps:
            if p < 0 or p >= T:
                raise ValueError(f"position {i}: parent {p} is out of range 0..{T - 1}")
            if p >= i:
                raise ValueError(
                    f"position {i}: parent {p} is not earlier than its child "
                    "(parents must precede children, which also rules out cycles)"
                )
        if len(set(ps)) != len(ps):
            raise ValueError(f"position {i}: repeated parent in {list(ps)}")


@dataclass(frozen=True)
class CausalGraph:
    """Parents of every sequence position and of the prediction target.

    Validated at construction: parents must be earlier than their child (so the graph is
    acyclic), in range, and not repeated. Errors name the offending position.
    """

    parents: Parents
    target_parents: tuple[int, ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        if isinstance(self.parents, (str, bytes)) or not isinstance(self.parents, Sequence):
            raise TypeError(f"parents: expected a list of parent lists, got {type(self.parents).__name__}")
        parents = tuple(_as_parent_tuple(p, f"parents of position {i}") for i, p in enumerate(self.parents))
        target = _as_parent_tuple(self.target_parents, "target_parents")
        T = len(parents)
        if T < 2:
            raise ValueError(f"parents: a graph needs at least 2 positions, got {T}")
        _check_parent_lists(parents)
        if not target:
            raise ValueError("target_parents: the prediction target needs at least one parent")
        for p in target:
            if p < 0 or p >= T:
                raise ValueError(f"target: parent {p} is out of range 0..{T - 1}")
        if len(set(target)) != len(target):
            raise ValueError(f"target: repeated parent in {list(target)}")
        object.__setattr__(self, "parents", parents)
        object.__setattr__(self, "target_parents", target)

    # ---- derived facts -------------------------------------------------------------------
    @property
    def seq_len(self) -> int:
        """Number of sequence positions ``T`` (the model's context length)."""
        return len(self.parents)

    @property
    def in_degrees(self) -> tuple[int, ...]:
        return tuple(len(p) for p in self.parents)

    @property
    def max_in_degree(self) -> int:
        return max(max(self.in_degrees), len(self.target_parents))

    @property
    def is_single_parent(self) -> bool:
        """Every position and the target have at most one parent (trees, chains)."""
        return self.max_in_degree == 1

    @property
    def query_position(self) -> int | None:
        """``T - 1`` when the last position is a uniformly drawn query read by the target."""
        T = self.seq_len
        if self.target_parents == (T - 1,) and not self.parents[T - 1]:
            return T - 1
        return None

    def adjacency(self) -> torch.Tensor:
        """``[T, T]`` 0/1 matrix with ``adj[i, j] = 1`` iff ``j`` is a parent of ``i``."""
        T = self.seq_len
        adj = torch.zeros(T, T)
        for i, ps in enumerate(self.parents):
            for p in ps:
                adj[i, p] = 1.0
        return adj

    def parent_index(self) -> torch.Tensor:
        """``[T, k_max]`` parent positions, padded with ``-1`` (``k_max`` >= 1)."""
        k = max(1, max(self.in_degrees))
        idx = torch.full((self.seq_len, k), -1, dtype=torch.long)
        for i, ps in enumerate(self.parents):
            if ps:
                idx[i, : len(ps)] = torch.tensor(ps)
        return idx

    def parent_lists(self) -> list[list[int]]:
        """Plain parent lists, the form the ``probes`` package takes."""
        return [list(p) for p in self.parents]

    def with_last_parent_only(self) -> "CausalGraph":
        """The graph that keeps only each node's last parent: the one-parent baseline's model."""
        return CausalGraph(
            tuple(p[-1:] for p in self.parents), self.target_parents[-1:], name=f"{self.name}-last-parent"
        )

    # ---- families (docs/science.md §1) ----------------------------------------------------------
    @classmethod
    def from_parents(
        cls, parents: Sequence[Sequence[int]], target_parents: Sequence[int] | None = None, name: str = "custom"
    ) -> "CausalGraph":
        """Any user graph: one list of earlier positions per position, ``[]`` for a root.

        Without ``target_parents`` the last position must be a root: it becomes the query and
        the target is ``pi(. | s_{T-1})``, as in the paper's single-parent tasks.
        """
        if isinstance(parents, (str, bytes)) or not isinstance(parents, Sequence):
            raise TypeError(f"parents: expected a list of parent lists, got {type(parents).__name__}")
        _check_parent_lists(tuple(_as_parent_tuple(p, f"parents of position {i}") for i, p in enumerate(parents)))
        if target_parents is None:
            if len(parents) == 0 or len(parents[-1]) != 0:
                raise ValueError(
                    "target_parents: not given, so the last position must be a root ([]) to serve as "
                    f"the query; got parents {list(parents[-1]) if len(parents) else None} for it. "
                    "Pass target_parents to predict from positions inside the sequence."
                )
            target_parents = (len(parents) - 1,)
        return cls(tuple(tuple(p) for p in parents), tuple(target_parents), name=name)

    @classmethod
    def chain(cls, seq_len: int) -> "CausalGraph":
        """In-context Markov chain: ``P(i) = {i-1}`` for ``i < T-1``; position ``T-1`` is the query."""
        T = _check_seq_len(seq_len, 3)
        parents = [()] + [(i - 1,) for i in range(1, T - 1)] + [()]
        return cls(tuple(parents), (T - 1,), name="chain")

    @classmethod
    def icl(cls, seq_len: int) -> "CausalGraph":
        """In-context pairs: odd positions ``2k+1`` have parent ``2k``; even positions are roots."""
        T = _check_seq_len(seq_len, 3)
        parents = [((i - 1,) if i % 2 == 1 else ()) for i in range(T - 1)] + [()]
        return cls(tuple(parents), (T - 1,), name="icl")

    @classmethod
    def random_tree(cls, seq_len: int, generator: torch.Generator | None = None, version: int = 1) -> "CausalGraph":
        """Random tree with a query at ``T-1``.

        ``version=1``: ``p(i)`` uniform on ``{root, 0..i-1}``. ``version=2`` (Fig. 9): each
        ``i >= 1`` gets a uniform earlier parent with probability 1/2, else is a root.
        """
        T = _check_seq_len(seq_len, 3)
        if version not in (1, 2):
            raise ValueError(f"version: expected 1 or 2, got {version!r}")
        parents: list[tuple[int, ...]] = [()]
        for i in range(1, T - 1):
            if version == 1:
                p = int(torch.randint(-1, i, (1,), generator=generator))
                parents.append(() if p < 0 else (p,))
            else:
                has_parent = bool(torch.rand(1, generator=generator) < 0.5)
                p = int(torch.randint(0, i, (1,), generator=generator))
                parents.append((p,) if has_parent else ())
        parents.append(())
        return cls(tuple(parents), (T - 1,), name=f"random-tree-v{version}")

    @classmethod
    def two_parent(cls, seq_len: int) -> "CausalGraph":
        """Figs. 5, 7: ``P(i) = {(i-1)//2, i-1}`` for ``i >= 2``; the target ``T`` has ``{(T-1)//2, T-1}``."""
        T = _check_seq_len(seq_len, 3)
        parents = [(), ()] + [((i - 1) // 2, i - 1) for i in range(2, T)]
        return cls(tuple(parents), ((T - 1) // 2, T - 1), name="two-parent")

    @classmethod
    def markov(cls, seq_len: int, order: int = 1) -> "CausalGraph":
        """Order-``n`` Markov chain / n-gram: ``P(i) = {i-n..i-1}`` for ``i >= n``.

        ``order=1`` is the paper's chain with a query. Higher orders predict the virtual
        position ``T`` from ``{T-n..T-1}``; the first ``n`` positions are roots.
        """
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order: expected an int >= 1, got {order!r}")
        if order == 1:
            return cls.chain(seq_len)
        T = _check_seq_len(seq_len, order + 1)
        parents = [()] * order + [tuple(range(i - order, i)) for i in range(order, T)]
        return cls(tuple(parents), tuple(range(T - order, T)), name=f"markov-{order}")

    @classmethod
    def by_name(cls, name: str, seq_len: int, generator: torch.Generator | None = None) -> "CausalGraph":
        """Build a family by name: ``chain``, ``icl``, ``random`` / ``random-v1``, ``random-v2``,
        ``two-parent``, or ``markov-N``."""
        key = name.lower()
        if key == "chain":
            return cls.chain(seq_len)
        if key == "icl":
            return cls.icl(seq_len)
        if key in ("random", "random-v1", "random-tree"):
            return cls.random_tree(seq_len, generator, version=1)
        if key == "random-v2":
            return cls.random_tree(seq_len, generator, version=2)
        if key in ("two-parent", "multi-parent"):
            return cls.two_parent(seq_len)
        if key.startswith("markov-") and key[7:].isdigit():
            return cls.markov(seq_len, int(key[7:]))
        raise ValueError(
            f"graph: unknown name {name!r}; expected one of {', '.join(GRAPH_NAMES)}"
        )


def _check_seq_len(seq_len: object, minimum: int) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < minimum:
        raise ValueError(f"seq_len: expected an int >= {minimum}, got {seq_len!r}")
    return seq_len
