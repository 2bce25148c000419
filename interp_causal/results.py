"""The paper's claims as checks, and ``docs/results.md`` written from the reproductions' own JSON.

Each experiment's :data:`CHECKS` judge its ``reproduction.json`` (``reproduce`` stores them there,
with the date and the machine). ``interp-causal results`` collects the reproductions of
``runs/reproduce/`` into ``docs/results.json`` (the latest of each experiment and profile; older
entries stay), and renders ``docs/results.md`` and the README's table from that file alone, so the
numbers a reader sees are the numbers a run wrote, never typed.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from interp_causal.names import EXPERIMENTS
from interp_causal.report.tables import cell, fmt, passed

README_BEGIN = "<!-- results table: written by `interp-causal results`; do not edit by hand -->"
README_END = "<!-- end of results table -->"
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


@dataclass(frozen=True)
class Check:
    """One claim of the paper about one experiment: ``value`` reads a number (or None: not
    measured) from a reproduction, ``passes`` judges it, ``rule`` says so in words."""

    claim: str
    rule: str
    value: Callable[[dict], float | None]
    passes: Callable[[float], bool]
    profiles: tuple[str, ...] = ("quick", "paper")


def _row(metric: str) -> Callable[[dict], float | None]:
    def read(rep: dict) -> float | None:
        return next((r["ours"] for r in rep["rows"] if r["metric"] == metric), None)

    return read


def _heads_on_different_parents(rep: dict) -> float | None:
    """The smaller of the two layer-1 heads' mass on its own parent, 0 when both take the same parent."""
    heads = rep["numbers"].get("position_attention") or []
    if len(heads) < 2:
        return None
    slots = [max((0, 1), key=lambda r: h[f"mass_parent{r}"]) for h in heads]
    if sorted(slots) != [0, 1]:
        return 0.0
    return min(h[f"mass_parent{r}"] for h, r in zip(heads, slots))


def _gradient_argmax(graph: str) -> Check:
    return Check(f"{graph}: the first gradient's row argmax is the parent", "= 1 (every non-root row)",
                 lambda rep: rep["numbers"].get(graph, {}).get("argmax_on_parent"), lambda v: v == 1.0)


CHECKS: dict[str, list[Check]] = {
    "chain": [
        Check("layer 1 recovers the graph: row argmax of softmax(A(1)) on the parent", "= 1 (every position)",
              _row("row-argmax of softmax(A(1)) on the parent"), lambda v: v == 1.0),
        Check("the loss reaches Bayes (the readout's floor is 1.4% above it)", "gap < 3%",
              _row("gap to Bayes (%)"), lambda v: v < 3.0),
    ],
    "gradient": [_gradient_argmax(g) for g in ("chain", "icl", "random")],
    "standard": [
        Check("a standard transformer reaches Bayes", "gap < 2%", _row("gap to Bayes (%)"), lambda v: v < 2.0),
    ],
    "multi-parent": [
        Check("each layer-1 head attends to a different parent", "heads on different parents, each >= 0.8",
              _heads_on_different_parents, lambda v: v >= 0.8, ("paper",)),
        Check("each layer-1 head attends to a different parent, 5000 steps", "heads on different parents, each >= 0.6",
              _heads_on_different_parents, lambda v: v >= 0.6, ("quick",)),
        Check("the loss leaves the one-parent plateau and reaches Bayes", "gap < 0.03 nats",
              _row("final gap to Bayes"), lambda v: v < 0.03, ("paper",)),
    ],
    "many-trees": [
        Check("attention on the true parent across random trees (paper 0.837)", "|ours - 0.837| <= 0.05",
              _row("mean attention on the true parent"), lambda v: abs(v - 0.837) <= 0.05, ("paper",)),
        Check("attention on the true parent across random trees, 3000 steps", ">= 0.7",
              _row("mean attention on the true parent"), lambda v: v >= 0.7, ("quick",)),
    ],
    "interventions": [],
}


def check(experiment: str, reproduction: dict) -> list[dict]:
    """The checks of ``experiment`` (its name without ``-GRAPH``) that apply to the reproduction's
    profile: ``{"claim", "rule", "value", "passed"}`` each (``passed`` None when not measured)."""
    out = []
    for c in CHECKS.get(experiment, []):
        if reproduction["profile"] not in c.profiles:
            continue
        value = c.value(reproduction)
        out.append({"claim": c.claim, "rule": c.rule, "value": value,
                    "passed": None if value is None else bool(c.passes(value))})
    return out


def machine() -> dict:
    """Where a reproduction ran: cores, the CPU's model, Python, torch and TransformerLens versions,
    the platform. The CPU goes in because wall times only compare on one model: the same suite
    took 1.7-2.2x longer on one 2-core AMD EPYC VM than on another."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        lens = version("transformer-lens")
    except PackageNotFoundError:  # pragma: no cover - a dependency
        lens = None
    return {"cores": os.cpu_count(), "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformer_lens": lens, "python": platform.python_version(),
            "platform": platform.platform()}


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The CPU's model name (Linux's ``/proc/cpuinfo``; ``platform.processor()`` elsewhere), or None."""
    return cpuinfo_field("model name", cpuinfo) or platform.processor() or None


def cpuinfo_field(name: str, cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The first CPU's ``name`` line of Linux's ``/proc/cpuinfo`` (``"model name"``, ``"flags"``), or None."""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name and value.strip():
                return value.strip()
    except OSError:
        pass
    return None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ---- collecting and rendering ------------------------------------------------------------------
def collect(runs: str | Path, results: dict | None = None) -> dict:
    """``results`` (``{"EXPERIMENT PROFILE": entry}``) updated with every ``reproduction.json``
    under ``runs`` (its subdirectories, one level down); a tiny profile is skipped (its numbers
    mean nothing)."""
    results = dict(results or {})
    found = sorted(Path(runs).glob("*/reproduction.json")) if Path(runs).is_dir() else []
    for path in found:
        rep = json.loads(path.read_text())
        if rep["profile"] == "tiny":
            continue
        results[f"{rep['experiment']} {rep['profile']}"] = {
            key: rep.get(key) for key in ("experiment", "profile", "wall_s", "date", "machine", "rows", "checks")}
    return results


def base_experiment(label: str) -> str:
    """``chain`` for ``chain-icl``: the experiment a reproduction's label names."""
    return next((e for e in EXPERIMENTS if label == e or label.startswith(e + "-")), label)


def _order(key: str) -> tuple:
    """Experiments in ``names.EXPERIMENTS`` order, then by label, quick before paper."""
    label, profile = key.rsplit(" ", 1)
    base = base_experiment(label)
    return EXPERIMENTS.index(base) if base in EXPERIMENTS else len(EXPERIMENTS), label, profile != "quick"


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "not run"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _cpu(m: dict) -> str:
    return f"{m['cpu']}, " if m.get("cpu") else ""


def _verdict(checks: list[dict] | None) -> str:
    if not checks:
        return "no check recorded (docs/results.md has its numbers)"
    if any(c["passed"] is False for c in checks):
        return "FAILED"
    if any(c["passed"] is None for c in checks):
        return "not measured"
    return "passed"


def render_md(results: dict) -> str:
    """``docs/results.md``: for each experiment and profile, the date, the machine, the wall time,
    every check and every number beside the paper's."""
    from interp_causal.report.tables import checks_md, table

    lines = ["# Results", "",
             "Written by `interp-causal results` from the reproductions' own `reproduction.json` "
             "(collected in `docs/results.json`); `make reproduce` runs every paper profile and writes it again.",
             "Do not edit by hand.", ""]
    for key in sorted(results, key=_order):
        e = results[key]
        m = e.get("machine") or {}
        lines += [f"## {e['experiment']}, {e['profile']} profile", "",
                  f"{_minutes(e.get('wall_s'))} on {m.get('cores', '?')} cores ({_cpu(m)}{m.get('torch_threads', '?')} torch "
                  f"threads), {e.get('date') or 'date not recorded'}; torch {m.get('torch', '?')}, TransformerLens "
                  f"{m.get('transformer_lens', '?')}, Python {m.get('python', '?')}, {m.get('platform', '?')}.", ""]
        lines += [checks_md(e.get("checks") or []) + table(e["rows"], markdown=True), ""]
    return "\n".join(lines)


def render_readme_table(results: dict) -> str:
    """The README's table: one line per experiment, its quick and paper wall times and checks."""
    lines = [README_BEGIN, "",
             "| experiment | quick | paper | checks (paper profile where run, else quick) |", "|---|---|---|---|"]
    experiments = sorted({k.rsplit(" ", 1)[0] for k in results}, key=lambda x: _order(x + " paper"))
    for name in experiments:
        quick, paper = results.get(f"{name} quick"), results.get(f"{name} paper")
        shown = paper or quick
        checks = "; ".join(cell(f"{c['claim']}: {fmt(c['value'])} (check: {c['rule']}; {passed(c)})")
                           for c in shown.get("checks") or [])
        verdict = f"{'paper' if paper else 'quick'}: {_verdict(shown.get('checks'))}"
        lines.append(f"| `reproduce {name}` | {_minutes(quick and quick.get('wall_s'))} | "
                     f"{_minutes(paper and paper.get('wall_s'))} | {verdict}{'. ' + checks if checks else ''} |")
    totals = {p: [e.get("wall_s") for k, e in results.items() if k.endswith(" " + p)] for p in ("quick", "paper")}
    if results:
        lines.append("| all of the above | " + " | ".join(
            _minutes(sum(t)) if t and None not in t else "-" for t in totals.values()) + " | |")
    machines = sorted({(e.get("machine") or {}).get("cores") or 0 for e in results.values()})
    dates = sorted(e["date"] for e in results.values() if e.get("date"))
    if results:
        lines += ["", f"Wall times inside `interp-causal reproduce` (imports excluded), one run at a time, on "
                      f"{' and '.join(str(c) for c in machines)} cores"
                      + (f", {dates[0][:10]}" + (f" to {dates[-1][:10]}" if dates[-1][:10] != dates[0][:10] else "")
                         if dates else "") + "; machines and versions in docs/results.md."]
    return "\n".join(lines + ["", README_END])


def replace_readme_table(readme: str, table: str) -> str:
    """``readme`` with the text between the two markers replaced by ``table`` (which holds them)."""
    if README_BEGIN not in readme or README_END not in readme:
        raise ValueError(f"readme: expected the markers {README_BEGIN!r} and {README_END!r}")
    head, _, rest = readme.partition(README_BEGIN)
    _, _, tail = rest.partition(README_END)
    return head + table + tail


def write_results(runs: str | Path = "runs/reproduce", docs: str | Path = "docs",
                  readme: str | Path | None = "README.md") -> dict:
    """Collect ``runs`` into ``docs/results.json``, write ``docs/results.md`` and the README's table
    (each through a temporary file and a rename). Returns the results."""
    from probes.files import atomic_write

    docs = Path(docs)
    path = docs / RESULTS_JSON
    previous = json.loads(path.read_text()) if path.is_file() else {}
    results = collect(runs, previous)
    docs.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(results, indent=1, sort_keys=True) + "\n").encode())
    atomic_write(docs / RESULTS_MD, render_md(results).encode())
    if readme is not None:
        readme = Path(readme)
        atomic_write(readme, replace_readme_table(readme.read_text(), render_readme_table(results)).encode())
    return results
