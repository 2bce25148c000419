"""What every probe is: settings in the constructor, then records from a model and a batch.

Two kinds, two small base classes:

- :class:`ForwardProbe` declares the sites it reads (:meth:`~ForwardProbe.sites`) and turns the
  captured activations into records (:meth:`~ForwardProbe.compute`); a
  :class:`~probes.suite.ProbeSuite` runs all of them in one forward pass.
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


@dataclass
class ProbeBatch:
    """What a probe sees besides activations: tokens ``[batch, pos]``, per-batch context
    (e.g. ``reference`` ``[batch, vocab]``), the model's dims, logits ``[batch, pos, vocab]`` of the
    suite's forward pass (None before it), and the site map."""

    tokens: torch.Tensor
    context: dict[str, Any]
    dims: ModelDims
    logits: torch.Tensor | None = None
    site_map: SiteMap | None = None

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

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
    """A probe that reads the suite's one forward pass: the sites it needs, then records."""

    def sites(self, dims: ModelDims) -> list[str]:
        """Canonical sites this probe reads from the suite's forward pass."""
        return []

    def compute(self, acts: dict[str, torch.Tensor], batch: ProbeBatch) -> list[Record]:
        """Records from the captured activations ``{site: tensor}`` and the batch."""
        raise NotImplementedError(f"{type(self).__name__}: a ForwardProbe must define compute()")


class OwnPassProbe(Probe):
    """A probe that runs after the shared pass and does its own (a backward pass), or none (weights)."""

    def run(self, model: nn.Module, batch: ProbeBatch) -> list[Record]:
        """Records from the model itself; leave its mode and parameters as found."""
        raise NotImplementedError(f"{type(self).__name__}: an OwnPassProbe must define run()")


def pattern_site(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


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
