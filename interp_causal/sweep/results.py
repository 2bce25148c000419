"""A sweep's results: ``sweep.csv`` from its trials' own files, figures and ``report.md``.

Every number comes from the trial's ``summary.json`` (losses, each mechanism's final score and
formation step) and ``trial.json`` (node, wall time), so ``interp-causal report SWEEP_DIR`` renders
the same table and figures again at any time, and a row always equals its run's summary.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from probes.files import atomic_write

from interp_causal.probing import MECHANISM_LABELS
from interp_causal.sweep.sweep import SweepDir
from interp_causal.training.run_dir import RunDir

LOSS_COLUMNS = ("final_test_loss", "bayes_loss", "gap", "gap_pct")


def trial_row(name: str, values: dict, run: RunDir, swept: list[str] = ()) -> dict:
    """One ``sweep.csv`` row: the trial, its grid values, its status and numbers."""
    row = {"trial": name, **{k: values[k] for k in sorted(values, key=lambda k: (k not in swept, swept.index(k) if k in swept else 0))}}
    if not run.summary.is_file():
        return {**row, "status": "missing"}
    s, info = run.read_summary(), run.read_trial() or {}
    row["status"] = "diverged" if s.get("diverged") else "done"
    row.update({k: s[k] for k in LOSS_COLUMNS})
    row["steps"] = s["steps"]
    for key, m in sorted((s.get("mechanisms") or {}).items()):
        if key == "final_step":
            continue
        row[f"{key}_score"] = m["value"] if isinstance(m, dict) else None
        row[f"{key}_step"] = m["threshold_step"] if isinstance(m, dict) else None
    row.update({"train_s": s["seconds"], "wall_s": info.get("wall_s"), "node": info.get("node"),
                "host": info.get("host")})
    return row


def collect(path: str | Path) -> tuple[dict, list[dict]]:
    """``(sweep.json, rows)`` of the sweep in ``path``."""
    sweep = SweepDir(path)
    spec = sweep.read_spec()
    swept = spec.get("swept", [])
    return spec, [trial_row(t["name"], t["values"], RunDir(sweep.trial_dir(t["name"])), swept) for t in spec["trials"]]


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    """``rows`` as CSV, atomically; the columns are every row's keys in order of appearance, floats
    in full precision (they read back equal), None as an empty cell."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else repr(row[k]) if isinstance(row[k], float) else row[k]
                         for k in columns})
    return atomic_write(path, text.getvalue().encode("utf-8"))


def render_sweep(path: str | Path) -> dict:
    """Write ``sweep.csv``, one figure per swept option (``figures/sweep_OPTION.png``) and
    ``report.md`` for the sweep in ``path``; return ``{"rows", "figures"}``."""
    from interp_causal.report import figures

    sweep = SweepDir(path)
    spec, rows = collect(path)
    write_csv(sweep.table, rows)
    done = [r for r in rows if r["status"] == "done"]
    swept = spec.get("swept", [])
    shown = [k for k in swept if k != "seed"] or swept
    found = {c[: -len("_score")] for r in done for c in r if c.endswith("_score")}
    mechanisms = [m for m in MECHANISM_LABELS if m in found] + sorted(found - set(MECHANISM_LABELS))
    panels = [("final_test_loss", "final test loss (dashed: Bayes)"), ("gap_pct", "gap to Bayes (% of Bayes)")]
    panels += [(f"{m}_score", f"{MECHANISM_LABELS.get(m, m.replace('_', ' '))}: final score") for m in mechanisms]
    panels += [(f"{m}_step", f"{MECHANISM_LABELS.get(m, m.replace('_', ' '))}: formation step") for m in mechanisms]
    names = []
    for option in shown if done else []:
        others = [k for k in swept if k not in (option, "seed")]
        seeds = len(spec["grid"].get("seed", [0])) if option != "seed" else 1
        name = f"sweep_{option}.png"
        figures.against_option(done, option, spec["grid"][option], others, panels, sweep.figures / name,
                               f"{len(done)} trials against {option.replace('_', '-')}"
                               + (f": mean and +/- 1 sd over {seeds} seeds" if seeds > 1 else ""),
                               references={"final_test_loss": "bayes_loss"})
        names.append(name)
    atomic_write(sweep.report, _report_md(spec, rows, names).encode("utf-8"))
    return {"rows": rows, "figures": names}


def _report_md(spec: dict, rows: list[dict], figure_names: list[str]) -> str:
    from interp_causal.report.tables import fmt

    status = {s: sum(r["status"] == s for r in rows) for s in ("done", "diverged", "missing")}
    lines = [f"# Sweep: {len(rows)} trials", "",
             "Grid: " + "; ".join(f"`{k.replace('_', '-')}` = {', '.join(v)}" for k, v in spec["grid"].items()), "",
             "Trials: " + ", ".join(f"{n} {s}" for s, n in status.items() if n), ""]
    columns = ["trial", *LOSS_COLUMNS[:3]] + [c for c in (rows[0] if rows else {}) if c.endswith(("_score", "_step"))]
    columns += ["wall_s", "node"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) if c != "node" else str(r.get(c) or "")[:8] for c in columns) + " |")
    lines += ["", "Every row: `trials/TRIAL/summary.json` and `trial.json`; all columns in `sweep.csv`.", ""]
    lines += [f"![{n}]({SweepDir.figures}/{n})\n" for n in figure_names]
    return "\n".join(lines)


def trial_line(trial, result: dict) -> str:
    """The line printed when a trial finishes."""
    if "error" in result:
        return f"{trial.name}: failed: {result['error']}"
    s = result["summary"]
    text = (f"{trial.name}: loss {s['final_test_loss']:.4f}, Bayes {s['bayes_loss']:.4f}, gap {s['gap_pct']:+.2f}%")
    if s.get("diverged"):
        text += f"; diverged at step {s['diverged']['step']} ({s['diverged']['reason']})"
    mechanisms = s.get("mechanisms") or {}
    for key in [k for k in MECHANISM_LABELS if k in mechanisms] + sorted(set(mechanisms) - set(MECHANISM_LABELS)):
        m = mechanisms[key]
        if isinstance(m, dict):
            formed = m["threshold_step"] if m["threshold_step"] is not None else "never"
            text += f"; {MECHANISM_LABELS.get(key, key.replace('_', ' '))} {m['value']:.2f} (formed at {formed})"
    return text + f" ({result['wall_s']:.1f} s{', resumed' if result.get('resumed') else ''}, node {result['node'][:8]})"
