"""Sweeps: a grid of ``train`` runs trained in parallel on Ray (this machine or a cluster), with
``sweep.csv`` and figures of every metric against every swept option.

    from interp_causal.sweep import Grid, run_sweep
    run_sweep(Grid.parse(["seed=0-3", "vocab=5,10", "steps=500"]), "runs/sweep")

Ray is optional (``pip install 'interp-causal[sweep]'``); the grid and the results need only this
package. Names load on first use, so that the grid (torch-free) answers a bad sweep at once.
"""

import importlib

_HOMES = {"MAX_TRIALS": "grid", "Grid": "grid", "collect": "results", "render_sweep": "results",
          "SweepDir": "sweep", "plan": "sweep", "run_sweep": "sweep", "MissingExtra": "trials", "Trial": "trials",
          "run_trials": "trials"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
