"""What every probe is: settings in the constructor, then records from a model and a batch.

Two kinds, two small base classes:

- :class:`ForwardProbe` declares the sites it reads (:meth:`~ForwardProbe.sites`); a
  :class:`~probes.suite.ProbeSuite` runs all of them in one forward pass, in chunks of the batch
  when asked. A *streaming* forward probe (the default) reduces each activation the moment it is
  produced to additive statistics (:meth:`~ForwardProbe.stats`: sums and counts), which the suite
  adds up over the chunks and turns into records at the end (:meth:`~ForwardProbe.records`): no
  activation outlives its layer, and a chunked run gives the unchunked numbers. A probe that needs
  the whole batch at once (a fitted linear probe) sets ``whole_batch = True`` and gets every site
  it reads, for the whole batch, in :meth:`~ForwardProbe.compute`.
- :class:`OwnPassProbe` (gradients, weights) does its own pass, or none, in
  :meth:`~OwnPassProbe.run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from probes.records import Record
from probes.sites import ModelDims, SiteMap


LOGITS = "logits"  # the pseudo-site of the model's output logits [batch, pos, vocab]

Stats = dict[Any, torch.Tensor]


@dataclass
class ProbeBatch:
    """What a probe sees besides activations: tokens ``[batch, pos]``, per-batch context
    (e.g. ``reference`` ``[batch, vocab]``), the model's dims, logits ``[batch, pos, vocab]`` of the
    suite's forward pass (whole-batch probes that read :data:`LOGITS`; None otherwise), and the
    site map. A chunk of a batch is a ``ProbeBatch`` too (:meth:`rows`)."""

    tokens: torch.Tensor
    context: dict[str, Any]
    dims: ModelDims
    logits: torch.Tensor | None = None
    site_map: SiteMap | None = None

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    def rows(self, start: int, stop: int) -> "ProbeBatch":
        """Sequences ``start:stop``, with every per-sequence context tensor sliced alike."""
        n = self.tokens.shape[0]
        context = {k: v[start:stop] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n else v
                   for k, v in self.context.items()}
        return ProbeBatch(self.tokens[start:stop], context, self.dims, None, self.site_map)

    def require(self, key: str, probe: str) -> Any:
        if key not in self.context:
            raise ValueError(
                f"{probe}: needs {key!r} passed to ProbeSuite.run(..., {key}=...); got context keys {sorted(self.context)}"
            )
        return self.context[key]


class Probe:
    """What both kinds share: ``name`` (the record's ``probe`` field), the layers probed, and a
    check of the batch before any pass. Subclass :class:`ForwardProbe` or :class:`OwnPassProbe`."""

    name = "probe"

    def __init__(self, layers: Sequence[int] | None = None):
        self.layers = _check_layers(layers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={self.layers})"

    def layer_list(self, dims: ModelDims) -> list[int]:
        layers = list(range(dims.n_layers)) if self.layers is None else list(self.layers)
        bad = [l for l in layers if not 0 <= l < dims.n_layers]
        if bad:
            raise ValueError(f"{type(self).__name__}.layers: {bad} out of range for a {dims.n_layers}-layer model")
        return layers

    def check(self, batch: ProbeBatch) -> None:
        """Validate the batch and context before any forward pass; raise ValueError/TypeError."""


class ForwardProbe(Probe):
    """A probe that reads the suite's one forward pass: the sites it needs, then records.

    Streaming (the default): define :meth:`stats` and :meth:`records`. Whole batch: set
    ``whole_batch = True`` (or define only :meth:`compute`).
    """

    whole_batch = False

    def sites(self, dims: ModelDims) -> list[str]:
        """Canonical sites this probe reads from the suite's forward pass (:data:`LOGITS` for the output)."""
        return []

    def wants_whole_batch(self) -> bool:
        return self.whole_batch or type(self).stats is ForwardProbe.stats

    def stats(self, site: str, act: torch.Tensor, chunk: ProbeBatch) -> Stats:
        """Additive statistics of one site's activation on one chunk: sums over its sequences (and
        their counts), float64, under keys unique to this probe. The suite adds them over chunks."""
        raise NotImplementedError(f"{type(self).__name__}: a streaming ForwardProbe must define stats()")

    def records(self, stats: Stats, batch: ProbeBatch) -> list[Record]:
        """Records from the statistics summed over the whole batch."""
        raise NotImplementedError(f"{type(self).__name__}: a streaming ForwardProbe must define records()")

    def compute(self, acts: dict[str, torch.Tensor], batch: ProbeBatch) -> list[Record]:
        """Records from every site's activation for the whole batch ``{site: tensor}`` (and
        ``batch.logits`` for :data:`LOGITS`). Whole-batch probes define it; for a streaming probe it
        is :meth:`records` of the batch's :meth:`stats`."""
        if self.wants_whole_batch():
            raise NotImplementedError(f"{type(self).__name__}: a whole-batch ForwardProbe must define compute()")
        stats: Stats = {}
        for site in self.sites(batch.dims):
            stats.update(self.stats(site, batch.logits if site == LOGITS else acts[site], batch))
        return self.records(stats, batch)


class OwnPassProbe(Probe):
    """A probe that runs after the shared pass and does its own (a backward pass), or none (weights)."""

    def run(self, model: nn.Module, batch: ProbeBatch) -> list[Record]:
        """Records from the model itself; leave its mode and parameters as found."""
        raise NotImplementedError(f"{type(self).__name__}: an OwnPassProbe must define run()")


def pattern_site(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def layer_of(site: str) -> int:
    """The layer of a ``blocks.{l}.`` site."""
    return int(site.split(".")[1])


def resid_post_site(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def _check_layers(layers: object) -> tuple[int, ...] | None:
    if layers is None:
        return None
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not all(
        isinstance(l, int) and not isinstance(l, bool) for l in layers
    ):
        raise TypeError(f"layers: expected None, an int or a list of ints, got {layers!r}")
    return tuple(layers)
