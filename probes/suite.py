"""ProbeSuite: many probes, one forward pass, only the sites they need.

    suite = ProbeSuite([ParentAttention(parents), GraphInductionProbe(parents)])
    result = suite.run(model, tokens)          # tokens [batch, pos]
    result.to_frame(); result.best("parent_attention", "mass")

Every forward probe reads the same pass, run under ``torch.no_grad()`` with hooks only at the
union of their sites (no full activation cache). :class:`~probes.base.OwnPassProbe` probes run after it:
the gradient probe does its own forward and backward pass, weight-space probes none. The suite
leaves the model's train/eval mode as it finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from probes.base import ForwardProbe, OwnPassProbe, Probe, ProbeBatch
from probes.inputs import check_tokens
from probes.records import ProbeResult, Record
from probes.sites import SiteMap, find_sites, model_device, model_dims, run_with_sites


class ProbeSuite:
    """A list of probes run together. See the module docstring."""

    def __init__(self, probes: Sequence[Probe]):
        if isinstance(probes, Probe):
            probes = [probes]
        if not isinstance(probes, Sequence) or not probes:
            raise TypeError(f"probes: expected a non-empty list of Probe instances, got {probes!r}")
        bad = [p for p in probes if not isinstance(p, (ForwardProbe, OwnPassProbe))]
        if bad:
            raise TypeError(f"probes: expected Probe instances (ForwardProbe or OwnPassProbe), "
                            f"got {[type(p).__name__ for p in bad]}")
        self.probes = list(probes)

    def __repr__(self) -> str:
        return f"ProbeSuite({self.probes!r})"

    def sites(self, model: nn.Module, site_map: SiteMap | None = None) -> list[str]:
        """The canonical sites the forward probes read on ``model`` (in first-use order)."""
        dims = model_dims(model, site_map)
        return list(dict.fromkeys(s for p in self.probes if isinstance(p, ForwardProbe) for s in p.sites(dims)))

    def run(self, model: nn.Module, tokens: torch.Tensor, site_map: SiteMap | None = None, **context: Any) -> ProbeResult:
        """Run every probe on ``tokens`` ``[batch, pos]``; ``context`` holds per-batch data such as
        ``reference`` ``[batch, vocab]`` (behaviour) or ``targets`` ``[batch, vocab]`` (gradient)."""
        tokens = check_tokens(tokens)
        device = model_device(model)
        if device is not None:
            tokens = tokens.to(device)
        batch = ProbeBatch(tokens, dict(context), model_dims(model, site_map), site_map=site_map)
        forward = [p for p in self.probes if isinstance(p, ForwardProbe)]
        own = [p for p in self.probes if isinstance(p, OwnPassProbe)]
        sites = self.sites(model, site_map)
        find_sites(model, sites, site_map)  # a missing site fails here, before any work
        for p in self.probes:
            p.check(batch)
        records: list[Record] = []
        if forward:
            with torch.no_grad():
                logits, acts = run_with_sites(model, tokens, sites, site_map)
            batch.logits = logits
            for p in forward:
                records += p.compute(acts, batch)
        for p in own:
            records += p.run(model, batch)
        return ProbeResult(records)


def default_suite(
    parents: Sequence[Sequence[int]],
    query_parents: Sequence[int] | None = None,
    copying_solver: str = "ridge",
) -> ProbeSuite:
    """The probes for the in-context causal task, cheap enough to run every few training steps.

    Parent attention and previous-token attention (every layer), graph-aware induction from the
    query, and the linear parent-token probe with the closed-form ridge solver (pass
    ``copying_solver="logistic"`` for scikit-learn's logistic regression, slower: run that suite on
    a coarser schedule). :func:`probes.formation.summarize` reads the result.
    """
    from probes.attention import ParentAttention, PreviousTokenAttention
    from probes.copying import LinearCopyingProbe
    from probes.induction import GraphInductionProbe

    return ProbeSuite([
        ParentAttention(parents),
        PreviousTokenAttention(),
        GraphInductionProbe(parents, query_parents),
        LinearCopyingProbe(parents, solver=copying_solver),
    ])
