"""Reports: figures (PNG) and a one-page summary from a run directory or an experiment."""

from interp_causal.report.run_report import render_run

__all__ = ["render_run"]
