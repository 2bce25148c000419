"""Interventions during training: ablated heads, clamped patterns, frozen parameters.

A run's ``config.json`` holds them as the strings the command line takes, so a resumed run,
a reloaded run and its report apply exactly the same ones::

    "interventions": {"ablate": ["1.0"], "clamp": ["0.0=parents"], "freeze": ["blocks.1.attn.W_Q@0:500"]}

- ``ablate L.H``: head ``H`` of layer ``L`` outputs zero, in every forward pass (training,
  evaluation, probes);
- ``clamp L.H=PATTERN``: the head attends with a pattern named in ``probes.interventions.PATTERNS``,
  built from each batch's tokens and the task's graph (``parents``, ``parents:R``,
  ``graph_induction`` from the task's parent lists and query parents; ``previous``, ``induction``);
- ``freeze NAME[@START:STOP]``: the parameter ``NAME`` (a ``HookedTransformer`` name such as
  ``blocks.0.attn.W_Q``, the model's own state-dict name, or a prefix ending in ``.`` such as
  ``blocks.0.``) receives no update in steps ``START <= step < STOP`` (either end may be left
  out). A frozen parameter gets no gradient, so neither the optimiser's step nor its weight decay
  touches it: it stays the same to the bit.

The head interventions are hooks (``probes.interventions.attach``), which evaluation by probes and
any later call of the model run. Training the two-layer paper model, the structured path runs them
as given patterns instead (``models.structured.last_logits(patterns=)``, the same function, tested
equal), so it keeps its speed; any other model trains through its own forward with the hooks.
Freezing needs no hook and works on either forward.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

KINDS = ("ablate", "clamp", "freeze")


def parse_head(text: object, arg: str = "head") -> tuple[int, int]:
    """``"1.0"`` -> ``(1, 0)``: layer and head, both counted from 0."""
    m = re.fullmatch(r"(\d+)\.(\d+)", text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{arg}: expected LAYER.HEAD such as 1.0 (both counted from 0), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def parse_clamp(text: object) -> tuple[int, int, str]:
    """``"0.0=parents"`` -> ``(0, 0, "parents")``; the pattern name is checked against ``PATTERNS``."""
    from probes.interventions import PATTERNS, _parse_pattern_name

    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"clamp: expected LAYER.HEAD=PATTERN with PATTERN one of {PATTERNS}, got {text!r}")
    head, _, pattern = text.partition("=")
    layer, h = parse_head(head, "clamp")
    try:
        _parse_pattern_name(pattern.strip())
    except ValueError:
        raise ValueError(f"clamp: unknown pattern {pattern.strip()!r} in {text!r}; expected one of {PATTERNS} "
                         "(parents:R: the R-th parent, from 0)") from None
    return layer, h, pattern.strip()


def parse_freeze(text: object) -> tuple[str, int, int | None]:
    """``"blocks.0.attn.W_Q@100:500"`` -> ``(name, 100, 500)``; no ``@`` freezes from step 0 to the end."""
    m = re.fullmatch(r"([\w.]+)(?:@(\d*):(\d*))?", text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"freeze: expected PARAM or PARAM@START:STOP (steps, either end optional), got {text!r}")
    start = int(m.group(2)) if m.group(2) else 0
    stop = int(m.group(3)) if m.group(3) else None
    if stop is not None and stop <= start:
        raise ValueError(f"freeze: {text!r} ends (step {stop}) before it starts (step {start})")
    return m.group(1), start, stop


@dataclass(frozen=True)
class Interventions:
    """The interventions of one training run, as their command-line strings (see the module docstring)."""

    ablate: tuple[str, ...] = ()
    clamp: tuple[str, ...] = ()
    freeze: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for kind in KINDS:
            value = getattr(self, kind)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise TypeError(f"{kind}: expected a list of strings, got {value!r}")
            object.__setattr__(self, kind, tuple(value))
        for text in self.ablate:
            parse_head(text, "ablate")
        heads = [parse_head(t, "ablate") for t in self.ablate] + [parse_clamp(t)[:2] for t in self.clamp]
        twice = sorted({f"{l}.{h}" for l, h in heads if heads.count((l, h)) > 1})
        if twice:
            raise ValueError(f"ablate, clamp: head {', '.join(twice)} is given more than one intervention")
        for text in self.freeze:
            parse_freeze(text)

    @classmethod
    def from_dict(cls, spec: Mapping | None) -> "Interventions":
        spec = dict(spec or {})
        unknown = set(spec) - set(KINDS)
        if unknown:
            raise ValueError(f"interventions: unknown kinds {sorted(unknown)}; expected some of {KINDS}")
        return cls(**{k: tuple(v) for k, v in spec.items()})

    def to_dict(self) -> dict:
        """Only the kinds in use, as lists (what ``config.json`` holds)."""
        return {k: list(getattr(self, k)) for k in KINDS if getattr(self, k)}

    def __bool__(self) -> bool:
        return any(getattr(self, k) for k in KINDS)

    @property
    def has_hooks(self) -> bool:
        return bool(self.ablate or self.clamp)

    def describe(self) -> list[str]:
        """One line per intervention, for summaries and reports."""
        out = [f"ablate L{l}H{h} (zero)" for l, h in map(parse_head, self.ablate)]
        out += [f"clamp L{l}H{h} to {p}" for l, h, p in map(parse_clamp, self.clamp)]
        for name, start, stop in map(parse_freeze, self.freeze):
            out.append(f"freeze {name}" + ("" if (start, stop) == (0, None) else f" in steps {start}..{'' if stop is None else stop - 1}"))
        return out

    def imposed(self) -> dict[tuple[int, int], str]:
        """``{(layer, head): "clamped to parents"}``: the heads whose behaviour is set, not learned."""
        out = {parse_head(t, "ablate"): "ablated" for t in self.ablate}
        out.update({(l, h): f"clamped to {p}" for l, h, p in map(parse_clamp, self.clamp)})
        return out

    def mark(self, mechanisms: dict) -> dict:
        """Mark, in place, each mechanism of a probe summary (``probes.summarize``) found at an ablated
        or clamped head with ``"imposed"``: its score was set by the intervention, not learned."""
        imposed = self.imposed()
        for m in mechanisms.values():
            if isinstance(m, dict) and (m.get("layer"), m.get("head")) in imposed:
                m["imposed"] = imposed[m["layer"], m["head"]]
        return mechanisms

    # ---- on a model ------------------------------------------------------------------------------
    def head_interventions(self, task) -> list:
        """``probes`` interventions for the hooks: zero ablations and clamps (graph patterns from ``task``)."""
        from probes.interventions import Ablate, Clamp

        out = [Ablate(l, h) for l, h in map(parse_head, self.ablate)]
        parents, query = task.graph.parent_lists(), list(task.graph.target_parents)
        for l, h, pattern in map(parse_clamp, self.clamp):
            out.append(Clamp(l, h, pattern, parents=parents, query_parents=query))
        return out

    def attach(self, model, task):
        """Attach the head interventions to ``model`` (checked against it first); the handle, or None."""
        from probes.interventions import attach

        if not self.has_hooks:
            return None
        return attach(model, self.head_interventions(task))

    def check_forward(self, forward: str, model=None) -> None:
        """Refuse ``forward="structured"`` with ablated or clamped heads where the structured path
        cannot run them (anything but the two-layer paper model)."""
        from interp_causal.models import structured

        if self.has_hooks and forward == "structured":
            reason = "no model was given" if model is None else structured.intervention_reason(model)
            if reason is not None:
                raise ValueError(f"forward: 'structured' cannot run ablated or clamped heads here ({reason}); "
                                 "use 'auto' or 'hooked'")

    def structured_patterns(self, model, task):
        """For the two-layer paper model, ``tokens -> {(layer, head): [batch, n, n]}``: the patterns
        the structured path uses in place of the ablated (zeros) and clamped heads'; None for a
        model it cannot take or without head interventions (the model's own forward runs the hooks).
        The heads are checked against the model where the hooks are attached (:meth:`attach`)."""
        from interp_causal.models import structured
        from probes.interventions import Clamp, named_pattern

        if not self.has_hooks or structured.intervention_reason(model) is not None:
            return None
        heads = self.head_interventions(task)

        def patterns(tokens: torch.Tensor) -> dict:
            B, n = tokens.shape
            return {(i.layer, i.head): named_pattern(i.pattern, tokens, i.parents, i.query_parents)
                    if isinstance(i, Clamp) else tokens.new_zeros(B, n, n, dtype=torch.float32) for i in heads}

        return patterns

    def check(self, model, task, forward: str = "auto") -> None:
        """Refuse, before any training step, a head the model lacks, a parameter it does not train,
        or a forward that cannot run the interventions."""
        self.check_forward(forward, model)
        attached = self.attach(model, task)
        if attached is not None:
            attached.remove()
        self.frozen_parameters(model)

    def frozen_parameters(self, model, stages: Sequence[str] = ()) -> list[tuple[str, int, int | None, list]]:
        """``(name, start, stop, parameters)`` for every freeze, then for the recipe's ``stages``
        (:func:`stage_freezes`). A freeze the user gave must match a trainable parameter of
        ``model``; a stage's may match none (the reduced model's readout never learns)."""
        out = []
        for specs, strict in ((self.freeze, True), (stages, False)):
            for name, start, stop in map(parse_freeze, specs):
                out.append((name, start, stop, resolve_parameters(model, name, strict)))
        return out


def resolve_parameters(model, name: str, strict: bool = True) -> list[torch.nn.Parameter]:
    """The trainable parameters ``name`` means on ``model``: a state-dict name, a ``HookedTransformer``
    name (translated on a bridge), or a prefix ending in ``.``; with ``strict``, at least one."""
    from interp_causal.models.backend import bridge_name, parameter

    keys = list(model.state_dict())
    if name.endswith("."):
        matched = [k for k in keys if k.startswith(name)]
    elif name in keys:
        matched = [name]
    else:
        try:
            matched = [bridge_name(name)] if bridge_name(name) in keys else []
        except KeyError:
            matched = []
    params = [parameter(model, k) for k in matched]
    params = [p for p in params if p is not None and p.requires_grad]
    if not params and strict:
        trainable = [k for k in keys if (p := parameter(model, k)) is not None and p.requires_grad]
        raise ValueError(f"freeze: {name!r} matches no trainable parameter of this {type(model).__name__}; "
                         f"its trainable parameters are {trainable}")
    return params


def stage_freezes(stage_split: int, n_layers: int) -> list[str]:
    """The freezes of a stage-wise recipe (Algorithm 1 of the paper): before ``stage_split`` only
    the first layer learns; from it on, the first layer is frozen and the rest learns."""
    later = [f"blocks.{l}.@0:{stage_split}" for l in range(1, n_layers)]
    return later + [f"unembed.@0:{stage_split}", f"blocks.0.@{stage_split}:"]


def frozen_at(freezes: Sequence[tuple[str, int, int | None, list]], step: int) -> list[torch.nn.Parameter]:
    """The parameters frozen at ``step`` (the step about to be taken, counted from 0)."""
    return [p for _, start, stop, params in freezes if start <= step and (stop is None or step < stop) for p in params]
