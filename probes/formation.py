"""When did a mechanism form? Step series of a score, and a summary of a run's probe records.

``formation_steps`` takes a score's series over training steps and returns the first step at
which it reaches a threshold and the step ending the steepest rise between consecutive probes
(rise per step, so unevenly spaced probes are compared fairly). ``summarize`` picks, at the last
probed step, the parent-attention head, the copying layer and the induction head, and reports
their formation steps.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

from probes.files import read_jsonl
from probes.records import ProbeResult, RecordLike, as_dicts

DEFAULT_THRESHOLDS = {"parent_attention": 0.5, "copying": 0.5, "induction": 0.5}

# summary key -> (probe, metric) sources in order of preference; "{slot}" is "" or "_parent{r}".
_MECHANISMS = {
    "parent_attention": [("parent_attention", "mass{slot}"), ("previous_token", "mass{slot}")],
    "copying": [("linear_copying", "selectivity{slot}"), ("linear_copying_ridge", "selectivity{slot}")],
    "induction": [("graph_induction", "context_mass{slot}"), ("graph_induction", "mass{slot}"),
                  ("induction", "prefix_matching{slot}")],
}


def formation_steps(
    steps: Sequence[int], values: Sequence[float], threshold: float, increasing: bool = True
) -> dict[str, int | None]:
    """``{"threshold_step", "steepest_step"}`` of a score series (None when it never happens).

    threshold_step: the first step whose value is ``>= threshold`` (``<=`` when ``increasing`` is
    False, for scores that fall as the mechanism forms, such as a KL). steepest_step: the later
    step of the consecutive pair with the largest rise per step (fall, when decreasing); None if
    the score never rises. NaN values are dropped; steps are sorted first.
    """
    if len(steps) != len(values):
        raise ValueError(f"steps, values: expected the same length, got {len(steps)} and {len(values)}")
    pairs = sorted((int(s), float(v)) for s, v in zip(steps, values) if v is not None and not math.isnan(float(v)))
    sign = 1.0 if increasing else -1.0
    threshold_step = next((s for s, v in pairs if sign * (v - threshold) >= 0), None)
    best_rate, steepest_step = 0.0, None
    for (s0, v0), (s1, v1) in zip(pairs, pairs[1:]):
        if s1 > s0:
            rate = sign * (v1 - v0) / (s1 - s0)
            if rate > best_rate:
                best_rate, steepest_step = rate, s1
    return {"threshold_step": threshold_step, "steepest_step": steepest_step}


RecordsInput = Union[ProbeResult, Iterable[RecordLike], str, "os.PathLike[str]"]


def summarize(records: RecordsInput, thresholds: Mapping[str, float] | None = None,
              mechanisms: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> dict[str, Any]:
    """The mechanisms of a run from its probe records (a ProbeResult, records or rows, or a ``probes.jsonl`` path).

    mechanisms: ``{name: [(probe, metric), ...]}``, the sources of each mechanism in order of
    preference (``"{slot}"`` in a metric stands for the per-parent-slot suffix); default the
    paper's three, ``parent_attention``, ``copying`` and ``induction``. thresholds: ``{name:
    threshold}``, default 0.5 each.

    Returns ``{"final_step", "parent_attention", "copying", "induction"}``; each mechanism is
    ``{"probe", "metric", "layer", "head", "value", "threshold", "threshold_step", "steepest_step"}``
    for the best head at the last probed step (for copying, a per-layer score that stays in the
    residual stream once written: the first layer reaching the threshold, else the best layer),
    or None when no record measures it. With several parents per position,
    ``parent_attention_parent0``, ... (and likewise for the others) name the best head per parent
    slot. Rows without a ``step`` field count as one snapshot (formation steps are then None).
    """
    rows = _rows(records)
    chosen = _MECHANISMS if mechanisms is None else dict(mechanisms)
    limits = {**{k: 0.5 for k in chosen}, **DEFAULT_THRESHOLDS, **(thresholds or {})}
    steps = [r.get("step") for r in rows if r.get("step") is not None]
    final = max(steps) if steps else None
    summary: dict[str, Any] = {"final_step": final}
    for key, sources in chosen.items():
        summary[key] = None
        for probe, metric in sources:
            names = {r["metric"] for r in rows if r["probe"] == probe}
            per_slot = re.compile(metric.format(slot=r"_parent(\d+)")) if "{slot}" in metric else None
            slots = sorted(int(m.group(1)) for n in names if per_slot and (m := per_slot.fullmatch(n)))
            if metric.format(slot="") not in names and not slots:
                continue
            summary[key] = _mechanism(rows, probe, metric.format(slot=""), final, limits[key])
            for r in slots:
                summary[f"{key}_parent{r}"] = _mechanism(rows, probe, metric.format(slot=f"_parent{r}"), final, limits[key])
            break
    return summary


def _mechanism(rows: list[dict], probe: str, metric: str, final: int | None, threshold: float) -> dict[str, Any] | None:
    """The best head (:func:`track`) and, under ``"heads"``, every head at or above ``threshold``
    at the last step, best first, each with its own formation steps: a multi-head model often
    has several heads doing one job."""
    best = track(rows, probe, metric, threshold, final_step=final)
    if best is None or best["head"] is None:
        return best
    last = [r for r in rows if r["probe"] == probe and r["metric"] == metric and r.get("step") == final
            and r["value"] is not None and not math.isnan(r["value"]) and r["value"] >= threshold]
    heads = []
    for r in sorted(last, key=lambda r: -r["value"]):
        t = track(rows, probe, metric, threshold, layer=r["layer"], head=r["head"], final_step=final)
        heads.append({k: t[k] for k in ("layer", "head", "value", "threshold_step", "steepest_step")})
    best["heads"] = heads
    return best


def track(records: RecordsInput, probe: str, metric: str, threshold: float, layer: int | None = None,
          head: int | None = None, increasing: bool = True, final_step: int | None = None) -> dict[str, Any] | None:
    """Where and when any probe's ``metric`` formed: the best (layer, head) at the last probed step
    (or the one given by ``layer`` / ``head``) and :func:`formation_steps` of its series.

    Returns ``{"probe", "metric", "layer", "head", "value", "threshold", "threshold_step",
    "steepest_step"}``, or None when no record measures it. ``increasing=False`` for scores that
    fall as the mechanism forms (a KL): the best is then the smallest. A layer-level score
    (``head`` None in the records, such as copying) stays in the residual stream once written, so
    the layer that forms it is the first to reach the threshold.
    """
    sign = 1.0 if increasing else -1.0
    mine = [r for r in _rows(records) if r["probe"] == probe and r["metric"] == metric and r["value"] is not None
            and not math.isnan(r["value"]) and (layer is None or r["layer"] == layer)
            and (head is None or r["head"] == head)]
    steps = [r.get("step") for r in mine if r.get("step") is not None]
    final = final_step if final_step is not None else (max(steps) if steps else None)
    last = [r for r in mine if r.get("step") == final]
    if not last:
        return None
    best = max(last, key=lambda r: sign * r["value"])
    if best["head"] is None:
        reached = sorted((r for r in last if sign * (r["value"] - threshold) >= 0), key=lambda r: r["layer"])
        best = reached[0] if reached else best
    series = sorted((r["step"], r["value"]) for r in mine
                    if r["layer"] == best["layer"] and r["head"] == best["head"] and r.get("step") is not None)
    formed = formation_steps([s for s, _ in series], [v for _, v in series], threshold, increasing)
    return {"probe": probe, "metric": metric, "layer": best["layer"], "head": best["head"], "value": best["value"],
            "threshold": threshold, **formed}


def _rows(records: RecordsInput) -> list[dict]:
    return read_jsonl(records) if isinstance(records, (str, os.PathLike)) else as_dicts(records)
