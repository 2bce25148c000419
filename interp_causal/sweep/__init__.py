"""Sweeps: a grid of ``train`` runs trained in parallel on Ray (this machine or a cluster), with
``sweep.csv`` and figures of every metric against every swept option.

    from interp_causal.sweep import Grid, run_sweep
    run_sweep(Grid.parse(["seed=0-3", "vocab=5,10", "steps=500"]), "runs/sweep")

Ray is optional (``pip install 'interp-causal[sweep]'``); the grid and the results need only this package.
"""

from interp_causal.sweep.grid import MAX_TRIALS, Grid
from interp_causal.sweep.results import collect, render_sweep
from interp_causal.sweep.sweep import SweepDir, plan, run_sweep
from interp_causal.sweep.trials import MissingExtra, Trial, run_trials

__all__ = ["MAX_TRIALS", "Grid", "MissingExtra", "SweepDir", "Trial", "collect", "plan", "render_sweep",
           "run_sweep", "run_trials"]
