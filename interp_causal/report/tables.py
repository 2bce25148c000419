"""Our numbers beside the paper's: the comparison table of a reproduction, as text or Markdown."""

from __future__ import annotations

from pathlib import Path

HEAD = ("metric", "ours", "paper", "gap", "note")


def fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def table(rows: list[dict], markdown: bool = False) -> str:
    """Rows ``{"metric", "ours", "paper", "gap", "note"}`` as an aligned text table (or Markdown)."""
    body = [(r["metric"], fmt(r["ours"]), fmt(r["paper"]), fmt(r["gap"]), r.get("note", "")) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
        return "\n".join(lines + ["| " + " | ".join(cell(x) for x in b) + " |" for b in body])
    widths = [max(len(x[k]) for x in [HEAD, *body]) for k in range(len(HEAD))]
    line = lambda x: "  ".join(c.ljust(w) if k in (0, 4) else c.rjust(w) for k, (c, w) in enumerate(zip(x, widths)))  # noqa: E731
    return "\n".join([line(HEAD), "-" * (sum(widths) + 8)] + [line(b) for b in body])


def cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell (its ``|`` escaped)."""
    return str(text).replace("|", "\\|")


def passed(check: dict) -> str:
    return "-" if check["passed"] is None else "yes" if check["passed"] else "NO"


def checks_md(checks: list[dict]) -> str:
    """The paper's claims judged (``interp_causal.results.check``) as a Markdown table, or ``""``."""
    if not checks:
        return ""
    lines = ["| claim | check | ours | passed |", "|---|---|---|---|"]
    return "\n".join(lines + [f"| {cell(c['claim'])} | {cell(c['rule'])} | {fmt(c['value'])} | {passed(c)} |"
                               for c in checks]) + "\n\n"


def comparison_md(summary: dict) -> str:
    """Heading and tables that open a reproduction's ``report.md``, from its ``reproduction.json`` contents."""
    return (f"# {summary['experiment']} ({summary['profile']} profile, {summary['wall_s']} s)\n\n"
            f"{checks_md(summary.get('checks') or [])}{table(summary['rows'], markdown=True)}\n\n")


def saved_comparison(run_dir: str | Path) -> str:
    """:func:`comparison_md` of ``run_dir/reproduction.json`` when a reproduction wrote it, else ``""``."""
    from interp_causal.training import RunDir

    reproduction = RunDir(run_dir).read_reproduction()
    return comparison_md(reproduction) if reproduction is not None else ""
