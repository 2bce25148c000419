"""ProbeSuite: many probes, one forward pass, only the sites they need.

    suite = ProbeSuite([ParentAttention(parents), GraphInductionProbe(parents)])
    result = suite.run(model, tokens)          # tokens [batch, pos]
    result.to_frame(); result.best("parent_attention", "mass")

Every forward probe reads the same pass, run under ``torch.no_grad()`` with hooks only at the
union of their sites (no full activation cache); streaming probes reduce each activation the
moment it is produced, so memory stays at one layer's activations whatever the depth, and long
batches run in chunks (``batch_size``) with the same results. :class:`~probes.base.OwnPassProbe` probes run after it:
the gradient probe does its own forward and backward pass, weight-space probes none. The suite
leaves the model's train/eval mode as it finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from probes.adapters import probe_model
from probes.base import LOGITS, ForwardProbe, OwnPassProbe, Probe, ProbeBatch, Stats
from probes.inputs import check_tokens, check_tokens_fit
from probes.records import ProbeResult, Record
from probes.sites import ModelDims, SiteMap, find_sites, model_device, model_dims, stream_sites


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
        dims = model_dims(probe_model(model, site_map), site_map)
        wanted = (s for p in self.probes if isinstance(p, ForwardProbe) for s in p.sites(dims) if s != LOGITS)
        return list(dict.fromkeys(wanted))

    def run(self, model: nn.Module, tokens: torch.Tensor, site_map: SiteMap | None = None,
            batch_size: int | None = None, **context: Any) -> ProbeResult:
        """Run every probe on ``tokens`` ``[batch, pos]``; ``context`` holds per-batch data such as
        ``reference`` ``[batch, vocab]`` (behaviour) or ``targets`` ``[batch, vocab]`` (gradient).

        batch_size: sequences per forward pass. ``None`` picks a size that keeps each pass's
        largest activation (a layer's ``[batch, head, q, k]`` pattern, or the logits when a probe
        reads them) near :data:`CHUNK_BYTES`. Streaming probes give the same numbers for any chunking.
        """
        model = probe_model(model, site_map)
        tokens = check_tokens(tokens)
        dims = model_dims(model, site_map)
        check_tokens_fit(tokens, dims)
        device = model_device(model)
        if device is not None:
            tokens = tokens.to(device)
        batch = ProbeBatch(tokens, dict(context), dims, site_map=site_map)
        forward = [p for p in self.probes if isinstance(p, ForwardProbe)]
        own = [p for p in self.probes if isinstance(p, OwnPassProbe)]
        find_sites(model, self.sites(model, site_map), site_map)  # a missing site fails here, before any work
        for p in self.probes:
            p.check(batch)
        size = _chunk_size(batch_size, tokens, dims, any(LOGITS in p.sites(dims) for p in forward))
        records: list[Record] = []
        if forward:
            records += self._forward(model, batch, forward, size)
        for p in own:
            records += p.run(model, batch)
        return ProbeResult(records)

    def _forward(self, model: nn.Module, batch: ProbeBatch, probes: list[ForwardProbe], size: int) -> list[Record]:
        """The forward probes over the batch in chunks of ``size`` sequences: streaming probes reduce
        each activation as it is produced; whole-batch probes get their sites concatenated."""
        readers: dict[str, list[ForwardProbe]] = {}
        for p in probes:
            for site in p.sites(batch.dims):
                readers.setdefault(site, []).append(p)
        whole = [p for p in probes if p.wants_whole_batch()]
        kept_sites = {s for p in whole for s in p.sites(batch.dims)}
        totals: dict[int, Stats] = {id(p): {} for p in probes if not p.wants_whole_batch()}
        kept: dict[str, list[torch.Tensor]] = {s: [] for s in kept_sites}
        n = batch.tokens.shape[0]
        for start in range(0, n, size):
            chunk = batch.rows(start, min(start + size, n))

            def take(site: str, act: torch.Tensor, chunk: ProbeBatch = chunk) -> None:
                for p in readers[site]:
                    if p.wants_whole_batch():
                        continue
                    for key, value in p.stats(site, act, chunk).items():
                        mine = totals[id(p)]
                        mine[key] = mine[key] + value if key in mine else value
                if site in kept:
                    kept[site].append(act.detach())

            hooked = [s for s in readers if s != LOGITS]
            with torch.no_grad():
                logits = stream_sites(model, chunk.tokens, hooked, take, batch.site_map, need_logits=LOGITS in readers)
            if LOGITS in readers:
                take(LOGITS, logits)
        records: list[Record] = []
        for p in probes:
            if p.wants_whole_batch():
                acts = {s: torch.cat(kept[s]) for s in p.sites(batch.dims)}
                batch.logits = acts.get(LOGITS)
                records += p.compute(acts, batch)
            else:
                records += p.records(totals[id(p)], batch)
        batch.logits = None
        return records


CHUNK_BYTES = 256 * 2**20  # the default budget of one chunk's forward pass


def _chunk_size(batch_size: object, tokens: torch.Tensor, dims: ModelDims, logits: bool) -> int:
    """``batch_size`` checked, or (None) the most sequences whose forward pass fits ``CHUNK_BYTES``.

    A transformer's forward holds per sequence about ``16 d_model`` floats per position (residual,
    queries, keys, values, a 4x MLP) and ``4 n_heads T`` (scores, pattern and their copies at the
    hooks), plus ``d_vocab`` per position for the logits when a probe reads them. Measured on a
    GPT-2-small-sized model, 256 x 128 tokens (``make bench``): chunks of 27 peak 1.1 GB above
    the model, bridge included, where the whole batch in one pass peaked 4.3 GB above it.
    """
    n, T = tokens.shape
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected None (automatic) or an int >= 1, got {batch_size!r}")
        return batch_size
    floats = 16 * (dims.d_model or 0) + 4 * (dims.n_heads or 1) * T + ((dims.d_vocab or 0) if logits else 0)
    return max(1, min(n, CHUNK_BYTES // (4 * T * max(floats, 1))))


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
