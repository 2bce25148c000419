"""What every probe is: settings in the constructor, the sites it reads, records from activations.

A *forward* probe declares its sites with :meth:`Probe.sites` and turns captured activations into
records with :meth:`Probe.compute`; a :class:`~probes.suite.ProbeSuite` runs all forward probes in
one pass. A probe with ``pass_kind = "own"`` (gradients, weights) instead implements
:meth:`Probe.run` and does its own pass, or none.
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
class Batch:
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
    """Base class. Subclasses set ``name`` (the record's ``probe`` field) and override what they use."""

    name = "probe"
    pass_kind = "forward"  # "forward": reads the suite's single pass; "own": runs its own pass

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

    def sites(self, dims: ModelDims) -> list[str]:
        """Canonical sites this probe reads from the suite's forward pass."""
        return []

    def check(self, batch: Batch) -> None:
        """Validate the batch and context before any forward pass; raise ValueError/TypeError."""

    def compute(self, acts: dict[str, torch.Tensor], batch: Batch) -> list[Record]:
        raise NotImplementedError(f"{type(self).__name__} is a forward probe without compute()")

    def run(self, model: nn.Module, batch: Batch) -> list[Record]:
        raise NotImplementedError(f"{type(self).__name__} runs in the suite's pass; it has no run()")


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
