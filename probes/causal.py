"""Causal scores as probes: what ablating or patching each head does to a metric.

Both are :class:`~probes.base.OwnPassProbe` s: one pass for the reference, then one pass per head
under the intervention (``probes.interventions``), so they run in a suite, during training
(``ProbeMonitor``, ``ProbeCallback``) and on checkpoints like every other probe.

The metric is a loss, lower is better: ``"loss"``, the mean next-token cross-entropy of the
predictions of positions ``start..T-1``; ``"reference_loss"``, the cross-entropy at the last
position against ``reference`` ``[batch, vocab]`` passed to the suite (the in-context task's
loss, with the Bayes estimator or the true next-token law as reference); ``"auto"``, the second
when a reference is passed and the first otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from probes.base import OwnPassProbe, ProbeBatch
from probes.gradient import soft_cross_entropy
from probes.inputs import check_distribution, check_tokens
from probes.interventions import ABLATIONS, Ablate, HeadIntervention, Patch, intervene, z_site
from probes.records import Record
from probes.sites import as_logits, run_with_sites

METRICS = ("auto", "loss", "reference_loss")


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, start: int = 1) -> torch.Tensor:
    """Mean cross-entropy of the predictions of positions ``start..T-1`` (logits ``[batch, pos, vocab]``)."""
    pred = logits[:, start - 1 : -1].float().log_softmax(-1)
    return -pred.gather(-1, tokens[:, start:, None]).mean()


class _HeadEffects(OwnPassProbe):
    """Shared by the two: the metric, the heads to score, and a pass under an intervention."""

    def __init__(self, metric: str = "auto", start: int = 1, layers: Sequence[int] | None = None,
                 heads: Sequence[tuple[int, int]] | None = None):
        super().__init__(layers)
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 1:
            raise ValueError(f"start: expected the first predicted position, an int >= 1, got {start!r}")
        self.metric, self.start = metric, start
        self.heads = None if heads is None else [tuple(h) for h in heads]

    def metric_name(self, batch: ProbeBatch) -> str:
        if self.metric == "auto":
            return "reference_loss" if "reference" in batch.context else "loss"
        return self.metric

    def check(self, batch: ProbeBatch) -> None:
        if self.metric_name(batch) == "reference_loss":
            check_distribution(batch.require("reference", self.name), "reference", batch.tokens.shape[0])
        elif batch.seq_len <= self.start:
            raise ValueError(f"start: {self.start} leaves no position to predict in sequences of length {batch.seq_len}")

    def head_list(self, model: nn.Module, batch: ProbeBatch) -> list[tuple[int, int]]:
        """The heads to score: those given, else every head of the probed layers (counted from
        ``hook_z`` on one sequence when the model's config does not say)."""
        if self.heads is not None:
            return self.heads
        layers = self.layer_list(batch.dims)
        if batch.dims.n_heads is not None:
            return [(l, h) for l in layers for h in range(batch.dims.n_heads)]
        sites = [z_site(l) for l in layers]
        with torch.no_grad():
            _, acts = run_with_sites(model, batch.tokens[:1], sites, batch.site_map)
        return [(l, h) for l, s in zip(layers, sites) for h in range(acts[s].shape[2])]

    def score(self, model: nn.Module, tokens: torch.Tensor, batch: ProbeBatch,
              interventions: Sequence[HeadIntervention] = ()) -> float:
        """The metric of ``model`` on ``tokens`` (targets from ``batch``) under ``interventions``."""
        with torch.no_grad(), intervene(model, interventions, batch.site_map) as m:
            logits = as_logits(m(tokens))
        if self.metric_name(batch) == "reference_loss":
            return float(soft_cross_entropy(logits, batch.context["reference"].to(logits.device)))
        return float(next_token_loss(logits, batch.tokens, self.start))

    def run(self, model: nn.Module, batch: ProbeBatch) -> list[Record]:
        was_training = model.training
        model.eval()
        try:
            return self._records(model, batch)
        finally:
            model.train(was_training)


class AblationProbe(_HeadEffects):
    """Per head, the rise of the metric when the head's output is ablated (``how``: zero, mean over
    the batch, or resampled from the next sequence of the batch). Records ``metric =
    "<metric>_increase"``, value ``ablated - clean`` (positive: the head helps), with ``clean`` and
    ``ablated`` beside it."""

    name = "ablation"

    def __init__(self, how: str = "zero", metric: str = "auto", start: int = 1, layers: Sequence[int] | None = None,
                 heads: Sequence[tuple[int, int]] | None = None):
        super().__init__(metric, start, layers, heads)
        if how not in ABLATIONS:
            raise ValueError(f"how: expected one of {ABLATIONS}, got {how!r}")
        self.how = how

    def _records(self, model: nn.Module, batch: ProbeBatch) -> list[Record]:
        tokens = batch.tokens
        reference = {"zero": None, "mean": tokens, "resample": tokens.roll(-1, 0)}[self.how]
        clean = self.score(model, tokens, batch)
        name = f"{self.metric_name(batch)}_increase"
        out = []
        for layer, head in self.head_list(model, batch):
            ablated = self.score(model, tokens, batch, [Ablate(layer, head, self.how, reference)])
            out.append(Record(self.name, layer, head, name, ablated - clean,
                              {"clean": clean, "ablated": ablated, "how": self.how}))
        return out


class PatchingProbe(_HeadEffects):
    """Per head, the share of the clean-vs-corrupted gap in the metric that patching the head's
    output from the clean run (the suite's tokens) into the corrupted one (``corrupted`` ``[batch,
    pos]`` passed to the suite) restores: ``(corrupted - patched) / (corrupted - clean)``, 1 when the
    head alone carries the difference. Targets are the clean run's. Records ``metric =
    "recovered"`` with ``clean``, ``corrupted`` and ``patched`` beside it."""

    name = "patching"

    def check(self, batch: ProbeBatch) -> None:
        super().check(batch)
        corrupted = check_tokens(batch.require("corrupted", self.name), "corrupted")
        if corrupted.shape != batch.tokens.shape:
            raise ValueError(f"corrupted: expected the clean tokens' shape {tuple(batch.tokens.shape)}, "
                             f"got {tuple(corrupted.shape)}")

    def _records(self, model: nn.Module, batch: ProbeBatch) -> list[Record]:
        clean_tokens = batch.tokens
        corrupted_tokens = batch.context["corrupted"].to(clean_tokens.device)
        clean = self.score(model, clean_tokens, batch)
        corrupted = self.score(model, corrupted_tokens, batch)
        out = []
        for layer, head in self.head_list(model, batch):
            patched = self.score(model, corrupted_tokens, batch, [Patch(layer, head, source=clean_tokens)])
            gap = corrupted - clean
            value = (corrupted - patched) / gap if gap != 0 else float("nan")
            out.append(Record(self.name, layer, head, "recovered", value,
                              {"clean": clean, "corrupted": corrupted, "patched": patched}))
        return out
