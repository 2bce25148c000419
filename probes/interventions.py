"""Interventions on attention heads: ablate, clamp and patch, on any model the probes accept.

    from probes import Ablate, Clamp, Patch, intervene
    with intervene(model, [Ablate(1, 0)]) as m:                  # zero the output of L1H0
        logits = m(tokens)
    with intervene(model, [Clamp(0, 0, "previous")]) as m:       # L0H0 attends to i - 1, exactly
        logits = m(tokens)
    with intervene(model, [Patch(1, 0, source=clean)]) as m:     # L1H0's output from the clean run
        logits = m(corrupted)

A head's *output* is its ``blocks.{l}.attn.hook_z`` slice ``[batch, pos, d_head]`` (before
``W_O``; the shared ``b_O`` is no head's). Every intervention edits it there, because that is the
site every model honours:

- **Ablate** replaces it by zeros, by its mean over a reference batch (per position), or by its value
  on a reference batch (resampling: row ``b`` takes reference row ``b mod n``).
- **Patch** replaces it by its value on a ``source`` batch of the same shape.
- **Clamp** makes the head attend with a given pattern ``[q, k]`` or ``[batch, q, k]``, or one
  named in :data:`PATTERNS` and built from each batch's tokens. It writes the pattern at
  ``hook_pattern`` (so probes reading the pattern see the clamp) *and* recomputes the head's output
  as ``z = P v`` from ``hook_v``: a ``TransformerBridge`` around TransformerLens 3.9's native
  attention fires ``hook_pattern`` but ignores what a hook writes there (measured: the output does
  not change), while ``hook_v`` and ``hook_z`` are honoured by every model here (TransformerLens
  3.9 ``HookedTransformer`` and bridges, 4.x bridges, Hugging Face models through the bridge, and
  plain modules whose site map names them). Exact when the head computes ``z = P v`` (no attention
  dropout in training mode).

Interventions compose: several on one layer apply in the order given. :func:`attach` keeps them on
a model until ``.remove()`` (training); :func:`intervene` is the context-manager form. Named
patterns read the tokens of each forward pass from the model's input.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Union

import torch
from torch import nn

from probes.base import pattern_site
from probes.induction import graph_match_mask, induction_pattern
from probes.inputs import check_tokens
from probes.parents import check_parents, parent_matrix
from probes.sites import ModelDims, SiteMap, hooks_at, model_device, model_dims, run_with_sites

ABLATIONS = ("zero", "mean", "resample")
PATTERNS = ("previous", "parents", "parents:R", "induction", "graph_induction")  # parents:R: the R-th parent only

Pattern = Union[str, torch.Tensor]


def z_site(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def v_site(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_v"


# ---- named patterns ------------------------------------------------------------------------------
def named_pattern(
    name: str,
    tokens: torch.Tensor,
    parents: Sequence[Sequence[int]] | None = None,
    query_parents: Sequence[int] | None = None,
) -> torch.Tensor:
    """The attention pattern ``[batch, T, T]`` called ``name`` (one of :data:`PATTERNS`) on ``tokens``.

    - ``previous``: row ``i`` on ``i - 1``;
    - ``parents``: row ``i`` spread evenly over the parents of ``i`` (``parents`` needed);
      ``parents:R``: on the ``R``-th parent only (one head per parent slot);
    - ``induction``: row ``i`` spread evenly over the positions ``j <= i`` with ``s_{j-1} = s_i``
      (classic induction, TransformerLens's ``induction_pattern``);
    - ``graph_induction``: the last row spread evenly over the positions whose parent tokens equal
      the query's (``probes.induction.graph_match_mask``; the Bayes estimator's counts), every
      other row on itself.

    A row with nowhere to go (position 0, a root, no match) attends to itself, so every row sums to 1.
    """
    tokens = check_tokens(tokens)
    B, T = tokens.shape
    kind, slot = _parse_pattern_name(name)
    if kind == "previous":
        rows = torch.zeros(T, T)
        rows[torch.arange(1, T), torch.arange(T - 1)] = 1.0
        weights = rows.expand(B, T, T)
    elif kind == "parents":
        ps = _need_parents(parents, T, name)
        weights = parent_matrix(ps, slot).expand(B, T, T)
    elif kind == "induction":
        weights = induction_pattern(tokens).cpu()
    else:
        ps = _need_parents(parents, T, name)
        qp = [T - 1] if query_parents is None else list(query_parents)
        weights = torch.zeros(B, T, T)
        weights[:, -1, :] = graph_match_mask(tokens, ps, qp).float().cpu()
    return _normalise_rows(weights).to(tokens.device)


def _parse_pattern_name(name: object) -> tuple[str, int | None]:
    if isinstance(name, str):
        if name in ("previous", "parents", "induction", "graph_induction"):
            return name, None
        m = re.fullmatch(r"parents:(\d+)", name)
        if m:
            return "parents", int(m.group(1))
    raise ValueError(f"pattern: expected one of {PATTERNS} (R a parent slot, e.g. parents:0) or a tensor "
                     f"[q, k] / [batch, q, k], got {name!r}")


def _need_parents(parents, T: int, name: str) -> list[list[int]]:
    if parents is None:
        raise ValueError(f"parents: the pattern {name!r} is built from the graph; pass parents=[[...], ...]")
    return check_parents(parents, T)


def _normalise_rows(weights: torch.Tensor) -> torch.Tensor:
    """Rows divided by their sums; an empty row becomes attention to its own position."""
    weights = weights.clone().float()
    T = weights.shape[-1]
    empty = weights.sum(-1) == 0
    eye = torch.eye(T).expand_as(weights)
    weights = torch.where(empty[..., None], eye, weights)
    return weights / weights.sum(-1, keepdim=True)


def check_pattern(pattern: object, name: str = "pattern", seq_len: int | None = None) -> torch.Tensor:
    """``pattern`` as a float tensor ``[q, k]`` or ``[batch, q, k]`` of causal attention rows
    (non-negative, each summing to 1, no weight on later positions); raise naming ``name``."""
    if not isinstance(pattern, torch.Tensor):
        raise TypeError(f"{name}: expected a pattern name ({', '.join(PATTERNS)}) or a tensor [q, k] / "
                        f"[batch, q, k], got {type(pattern).__name__}")
    if pattern.ndim not in (2, 3) or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(f"{name}: expected shape [q, k] or [batch, q, k] with q == k, got {tuple(pattern.shape)}")
    if seq_len is not None and pattern.shape[-1] != seq_len:
        raise ValueError(f"{name}: expected {seq_len} x {seq_len} rows for sequences of length {seq_len}, "
                         f"got {tuple(pattern.shape)}")
    p = pattern.detach().float()
    if not torch.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"{name}: entries must be finite and non-negative")
    sums = p.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        worst = float((sums - 1).abs().max())
        raise ValueError(f"{name}: every row must sum to 1 (an attention distribution); the worst is off by {worst:.3g}")
    T = p.shape[-1]
    if (p * torch.ones(T, T, device=p.device).triu(1)).abs().sum() > 0:
        raise ValueError(f"{name}: puts weight on later positions (k > q); a causal head cannot attend ahead")
    return p


# ---- the interventions ---------------------------------------------------------------------------
class HeadIntervention:
    """One head's intervention: where it acts and how it edits. Subclasses: :class:`Ablate`,
    :class:`Clamp`, :class:`Patch`."""

    label = "intervene"

    def __init__(self, layer: int, head: int):
        for arg, value in (("layer", layer), ("head", head)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{arg}: expected an int >= 0, got {value!r}")
        self.layer, self.head = layer, head

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.layer}, {self.head}{self._repr_extra()})"

    def _repr_extra(self) -> str:
        return ""

    def describe(self) -> str:
        """Short text for summaries and figures: ``ablate L1H0 (zero)``."""
        return f"{self.label} L{self.layer}H{self.head}"

    def check(self, dims: ModelDims) -> None:
        """Refuse a head the model does not have, naming the argument."""
        if not self.layer < dims.n_layers:
            raise ValueError(f"layer: {self.describe()} is out of range for a model with {dims.n_layers} layers "
                             f"(layers 0..{dims.n_layers - 1})")
        if dims.n_heads is not None and not self.head < dims.n_heads:
            raise ValueError(f"head: {self.describe()} is out of range for a model with {dims.n_heads} heads per layer "
                             f"(heads 0..{dims.n_heads - 1})")

    def sites(self) -> list[str]:
        return [z_site(self.layer)]

    def prepare(self, model: nn.Module, site_map: SiteMap | None) -> None:
        """Runs the model on whatever reference input the intervention needs (before it is attached)."""

    def edit(self, site: str, act: torch.Tensor, state: dict) -> torch.Tensor:
        """The replacement for ``act`` at ``site``; ``state`` holds this forward pass's ``tokens``
        and what earlier sites left there."""
        raise NotImplementedError

    def _set_head(self, z: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        z = z.clone()  # never write into a tensor the model may still need
        z[:, :, self.head] = value.to(z.dtype)
        return z


class _ReplaceOutput(HeadIntervention):
    """Replaces the head's output by one computed from a reference pass (``self.reference_z``)."""

    def __init__(self, layer: int, head: int, reference: torch.Tensor | None = None):
        super().__init__(layer, head)
        self.reference = None if reference is None else check_tokens(reference, f"{self.label}: reference")
        self.reference_z: torch.Tensor | None = None  # [n, pos, d_head]

    def prepare(self, model: nn.Module, site_map: SiteMap | None) -> None:
        if self.reference is None or self.reference_z is not None:
            return
        site = z_site(self.layer)
        with torch.no_grad():
            _, acts = run_with_sites(model, self.reference.to(model_device(model)), [site], site_map)
        self.reference_z = acts[site][:, :, self.head].detach()


class Ablate(_ReplaceOutput):
    """Ablate a head's output: ``how="zero"``; ``"mean"``, its mean over the ``reference`` batch at
    each position; ``"resample"``, its value on the ``reference`` batch (row ``b`` from reference
    row ``b mod n``). ``reference``: tokens ``[n, pos]`` at least as long as the ablated batches."""

    label = "ablate"

    def __init__(self, layer: int, head: int, how: str = "zero", reference: torch.Tensor | None = None):
        if how not in ABLATIONS:
            raise ValueError(f"how: expected one of {ABLATIONS}, got {how!r}")
        if how != "zero" and reference is None:
            raise ValueError(f"reference: a {how} ablation needs a reference batch of tokens [n, pos]")
        super().__init__(layer, head, None if how == "zero" else reference)
        self.how = how

    def _repr_extra(self) -> str:
        return f", {self.how!r}"

    def describe(self) -> str:
        return f"ablate L{self.layer}H{self.head} ({self.how})"

    def edit(self, site: str, act: torch.Tensor, state: dict) -> torch.Tensor:
        B, T = act.shape[:2]
        if self.how == "zero":
            return self._set_head(act, torch.zeros((), device=act.device))
        ref = self.reference_z
        if ref.shape[1] < T:
            raise ValueError(f"reference: {ref.shape[1]} positions, shorter than the ablated sequences ({T})")
        ref = ref[:, :T].to(act.device)
        if self.how == "mean":
            return self._set_head(act, ref.float().mean(0).expand(B, T, -1))
        rows = torch.arange(B, device=act.device) % ref.shape[0]
        return self._set_head(act, ref[rows])


class Patch(_ReplaceOutput):
    """Activation patching: the head's output on ``source`` (tokens ``[batch, pos]``, e.g. the clean
    run) replaces its output on the batch run (e.g. the corrupted one), which must have the same shape."""

    label = "patch"

    def __init__(self, layer: int, head: int, source: torch.Tensor):
        if source is None:
            raise ValueError("source: patching needs the tokens [batch, pos] of the run to patch from")
        super().__init__(layer, head, source)

    def edit(self, site: str, act: torch.Tensor, state: dict) -> torch.Tensor:
        if tuple(act.shape[:2]) != tuple(self.reference_z.shape[:2]):
            raise ValueError(f"source: patching needs batches of the source's shape {tuple(self.reference_z.shape[:2])}, "
                             f"got {tuple(act.shape[:2])}")
        return self._set_head(act, self.reference_z.to(act.device))


class Clamp(HeadIntervention):
    """Make a head attend with ``pattern``: a name in :data:`PATTERNS` (built from each batch's
    tokens, with ``parents`` / ``query_parents`` for the graph patterns) or a tensor ``[q, k]`` /
    ``[batch, q, k]`` of causal rows summing to 1. See the module docstring for where it acts."""

    label = "clamp"

    def __init__(
        self,
        layer: int,
        head: int,
        pattern: Pattern,
        parents: Sequence[Sequence[int]] | None = None,
        query_parents: Sequence[int] | None = None,
    ):
        super().__init__(layer, head)
        if isinstance(pattern, str):
            kind, _ = _parse_pattern_name(pattern)
            if kind in ("parents", "graph_induction") and parents is None:
                raise ValueError(f"parents: the pattern {pattern!r} is built from the graph; pass parents=[[...], ...]")
            self.parents = None if parents is None else check_parents(parents)
        else:
            pattern = check_pattern(pattern, "pattern")
            self.parents = None
        self.pattern = pattern
        self.query_parents = None if query_parents is None else list(query_parents)

    def _repr_extra(self) -> str:
        return f", {self.pattern!r}" if isinstance(self.pattern, str) else f", tensor{tuple(self.pattern.shape)}"

    def describe(self) -> str:
        what = self.pattern if isinstance(self.pattern, str) else "a given pattern"
        return f"clamp L{self.layer}H{self.head} to {what}"

    def sites(self) -> list[str]:
        return [v_site(self.layer), pattern_site(self.layer), z_site(self.layer)]

    def pattern_for(self, state: dict, B: int, T: int) -> torch.Tensor:
        """The clamp pattern ``[B, T, T]`` for this forward pass (built once per pass)."""
        key = ("pattern", id(self))
        if key not in state:
            if isinstance(self.pattern, str):
                tokens = state.get("tokens")
                if tokens is None:
                    raise ValueError(f"pattern: {self.pattern!r} is built from the tokens, and this forward pass "
                                     "was not given a token tensor")
                p = named_pattern(self.pattern, tokens, self.parents, self.query_parents)
            else:
                p = check_pattern(self.pattern, "pattern", seq_len=T)
                if p.ndim == 3 and p.shape[0] != B:
                    raise ValueError(f"pattern: a [batch, q, k] pattern for batch {p.shape[0]}, run on batch {B}")
            state[key] = p.expand(B, T, T)
        return state[key]

    def edit(self, site: str, act: torch.Tensor, state: dict) -> torch.Tensor:
        if site == v_site(self.layer):  # [batch, pos, kv_head, d_head]; kept for the z below
            state[("v", self.layer)] = act
            return act
        B = act.shape[0]
        T = act.shape[2] if site == pattern_site(self.layer) else act.shape[1]
        p = self.pattern_for(state, B, T).to(act.device)
        if site == pattern_site(self.layer):  # [batch, head, q, k]
            out = act.clone()
            out[:, self.head] = p.to(act.dtype)
            return out
        v = state[("v", self.layer)]
        kv = self.head // (act.shape[2] // v.shape[2])  # grouped-query attention: the head's key/value head
        return self._set_head(act, torch.einsum("bqk,bkd->bqd", p.to(v.dtype), v[:, :, kv]))


# ---- attaching -----------------------------------------------------------------------------------
class Attached:
    """Interventions held on a model until :meth:`remove`. ``model`` is the module to call (for a
    Hugging Face model, the bridge the probes use: see ``probes.adapters``).

    The model keeps its handles (``model._attached_interventions``), so the hooks live as long as
    the model does, even when this handle is dropped (as :func:`~interp_causal.training.run.load_run`
    does). They are taken off by :meth:`remove`, when the model is collected, or at interpreter exit
    (``weakref.finalize`` runs before modules are torn down, where TransformerLens's own hook
    removal would fail).
    """

    def __init__(self, model: nn.Module, interventions: list[HeadIntervention], stack: ExitStack):
        self.model, self.interventions = model, interventions
        self._close = weakref.finalize(self, stack.close)
        model.__dict__.setdefault("_attached_interventions", []).append(self)

    def remove(self) -> None:
        held = self.model.__dict__.get("_attached_interventions", [])
        if self in held:
            held.remove(self)
        self._close()

    def describe(self) -> list[str]:
        return [i.describe() for i in self.interventions]


def attach(
    model: nn.Module, interventions: Sequence[HeadIntervention], site_map: SiteMap | None = None
) -> Attached:
    """Attach ``interventions`` to ``model`` until ``.remove()``: every forward pass of
    ``attached.model`` runs with them. Heads are checked against the model first, and reference
    passes (mean and resample ablation, patching) run before anything is attached."""
    from probes.adapters import probe_model

    interventions = list(interventions)
    bad = [type(i).__name__ for i in interventions if not isinstance(i, HeadIntervention)]
    if bad:
        raise TypeError(f"interventions: expected Ablate, Clamp or Patch objects, got {bad}")
    model = probe_model(model, site_map)
    dims = model_dims(model, site_map)
    for i in interventions:
        i.check(dims)
    for i in interventions:
        i.prepare(model, site_map)
    state: dict = {}
    order: dict[str, list[HeadIntervention]] = {}
    for i in interventions:
        for site in i.sites():
            order.setdefault(site, []).append(i)

    def make_edit(site: str):
        def edit(act: torch.Tensor) -> torch.Tensor:
            for i in order[site]:
                act = i.edit(site, act, state)
            return act
        return edit

    def remember_tokens(module, args, kwargs):
        state.clear()  # a new forward pass
        tokens = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if tokens is not None and not tokens.dtype.is_floating_point:
            state["tokens"] = tokens

    stack = ExitStack()
    try:
        handle = model.register_forward_pre_hook(remember_tokens, with_kwargs=True)
        stack.callback(handle.remove)
        stack.callback(state.clear)
        stack.enter_context(hooks_at(model, list(order), site_map, edits={s: make_edit(s) for s in order},
                                     on_activation=lambda site, act: None))
    except BaseException:
        stack.close()
        raise
    return Attached(model, interventions, stack)


@contextmanager
def intervene(
    model: nn.Module, interventions: Sequence[HeadIntervention], site_map: SiteMap | None = None
) -> Iterator[nn.Module]:
    """Run with ``interventions`` for the duration; yields the module to call (see :func:`attach`)."""
    attached = attach(model, interventions, site_map)
    try:
        yield attached.model
    finally:
        attached.remove()
