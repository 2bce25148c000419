"""Which head does what, at a glance: previous-token, duplicate-token and induction scores of every
head as ``[layer, head]`` grids (plus parent attention and graph-aware induction given a graph).

    grids = head_scores(model)                  # repeated random tokens from the model's own vocabulary
    grids["induction"].argmax()                 # the flat index of the strongest induction head

``interp_causal.report.figures.head_map`` draws them; ``interp-causal probe`` does both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from probes.adapters import probe_model
from probes.attention import ParentAttention, PreviousTokenAttention
from probes.base import ForwardProbe
from probes.induction import GraphInductionProbe, InductionProbe, repeated_random_tokens
from probes.records import ProbeResult, RecordLike, as_dicts
from probes.sites import SiteMap, model_dims
from probes.suite import ProbeSuite

# grid name -> (probe, metric) in the suite of head_probes
HEAD_METRICS = {
    "previous_token": ("previous_token", "score"),
    "duplicate_token": ("induction", "duplicate_token"),
    "induction": ("induction", "repeat"),
    "prefix_matching": ("induction", "prefix_matching"),
    "parent_attention": ("parent_attention", "mass"),
    "graph_induction": ("graph_induction", "context_mass"),
}


def head_probes(period: int, parents: Sequence[Sequence[int]] | None = None) -> list[ForwardProbe]:
    """The probes behind the head map: previous-token and classic induction on tokens whose second
    half repeats the first (``period``), plus parent attention and graph-aware induction given ``parents``."""
    probes: list[ForwardProbe] = [PreviousTokenAttention(), InductionProbe(period=period)]
    if parents is not None:
        probes += [ParentAttention(parents), GraphInductionProbe(parents)]
    return probes


def default_tokens(model: nn.Module, batch: int = 64, seq_len: int | None = None, seed: int = 0,
                   site_map: SiteMap | None = None) -> torch.Tensor:
    """Repeated random tokens ``[batch, 2 * period]`` from the model's vocabulary, as long as its
    context allows (at most 128)."""
    dims = model_dims(probe_model(model, site_map), site_map)
    if dims.d_vocab is None:
        raise ValueError(f"tokens: {type(model).__name__} does not say its vocabulary size; pass tokens [batch, pos]")
    T = seq_len if seq_len is not None else min(dims.n_ctx or 128, 128)
    if T < 4:
        raise ValueError(f"seq_len: expected at least 4 positions for a repeated half, got {T}")
    return repeated_random_tokens(batch, T // 2, dims.d_vocab, torch.Generator().manual_seed(seed))


def head_scores(model: nn.Module, tokens: torch.Tensor | None = None, parents: Sequence[Sequence[int]] | None = None,
                site_map: SiteMap | None = None, batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """``{name: [layer, head] scores}`` for the names of :data:`HEAD_METRICS` that apply. tokens:
    ``[batch, 2 * period]``, second half repeating the first (default :func:`default_tokens`)."""
    tokens = default_tokens(model, site_map=site_map) if tokens is None else tokens
    period = tokens.shape[1] // 2
    result = ProbeSuite(head_probes(period, parents)).run(model, tokens, site_map=site_map, batch_size=batch_size)
    return grids(result)


def grids(records: ProbeResult | Iterable[RecordLike]) -> dict[str, torch.Tensor]:
    """The head-map grids ``[layer, head]`` found in a suite's result (or its records or rows)."""
    rows = as_dicts(records)
    out = {}
    for name, (probe, metric) in HEAD_METRICS.items():
        recs = [r for r in rows if (r["probe"], r["metric"]) == (probe, metric) and r["head"] is not None]
        if not recs:
            continue
        grid = torch.full((max(r["layer"] for r in recs) + 1, max(r["head"] for r in recs) + 1), float("nan"))
        for r in recs:
            grid[r["layer"], r["head"]] = float("nan") if r["value"] is None else r["value"]
        out[name] = grid
    return out
