"""``interp-causal sweep``: a grid of ``train`` runs in one directory, trained on Ray.

    result = run_sweep(Grid.parse(["seed=0-3", "vocab=5,10"]), "runs/sweep", {"steps": 500})

| file | what |
|---|---|
| ``sweep.json`` | the grid and its trials (name, grid values): the same command finds its own sweep again |
| ``trials/NAME/`` | each trial, an ordinary run directory (``interp-causal report`` works on it) |
| ``sweep.csv`` | one row per trial: grid values, losses, each mechanism's score and formation step, node |
| ``report.md``, ``figures/`` | each metric against each swept option (mean and band over seeds) |

Started again with the same grid, a sweep trains only what is missing (a trial interrupted
mid-way resumes from its checkpoint); a finished sweep trains nothing and says so.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from probes.files import read_json, write_json

from interp_causal.sweep.grid import MAX_TRIALS, Grid, train_options, value_text
from interp_causal.sweep.trials import ENGINES, Trial, require_ray, run_trials
from interp_causal.training.run_dir import _File


class SweepDir:
    """The files of one sweep under ``path`` (see the module's table)."""

    spec = _File("sweep.json")
    table = _File("sweep.csv")
    report = _File("report.md")
    figures = _File("figures")
    trials = _File("trials")

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def holds_sweep(self) -> bool:
        return self.spec.is_file()

    def read_spec(self) -> dict:
        if not self.spec.is_file():
            raise FileNotFoundError(f"sweep_dir: {self.path} holds no sweep (no {SweepDir.spec})")
        return read_json(self.spec)

    def trial_dir(self, name: str) -> Path:
        return self.trials / name


def plan(grid: Grid, out: str | Path, max_trials: int = MAX_TRIALS, yes: bool = False) -> list[Trial]:
    """The sweep's trials, each with its run config, checked before anything is written: the grid's
    size against ``max_trials`` (unless ``yes``), every trial's options (as ``train`` checks them),
    and an existing ``out`` (which must hold this same grid)."""
    from interp_causal.train_options import train_config

    if len(grid) > max_trials and not yes:
        raise ValueError(f"grid: {len(grid)} trials, more than --max-trials {max_trials}; pass --yes to run them all")
    sweep = SweepDir(out)
    if sweep.holds_sweep() and sweep.read_spec().get("grid") != grid.to_dict():
        raise ValueError(f"out: {sweep.path} holds another sweep (grid {sweep.read_spec().get('grid')}); "
                         "choose another --out")
    if not sweep.holds_sweep() and sweep.path.exists() and any(sweep.path.iterdir()):
        raise FileExistsError(f"out: {sweep.path} exists and holds no sweep; choose another --out")
    defaults = {dest: action.default for dest, action in train_options().items()}
    trials, names = [], set()
    for values in grid.trials():
        name = grid.name(values)
        if name in names:
            raise ValueError(f"grid: two trials would both be named {name}")
        names.add(name)
        args = argparse.Namespace(**{**defaults, **{k: list(v) if isinstance(v, list) else v
                                                    for k, v in values.items()}})
        try:
            config, _ = train_config(args)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"grid: trial {name}: {exc}") from None
        trials.append(Trial(name, config, sweep.trial_dir(name), {k: value_text(v) for k, v in values.items()}))
    for trial in trials:
        trial.state()  # refuses a directory holding a run of another config
    return trials


def run_sweep(grid: Grid, out: str | Path, address: str | None = None, cpus_per_trial: int | None = None,
              max_trials: int = MAX_TRIALS, yes: bool = False, progress: bool | None = None,
              echo: Callable[[str], None] | None = None, engine: str = "ray") -> dict:
    """Train the grid's trials that are not done into ``out`` (see :func:`run_trials`, and its
    ``engine``: ``"stacked"`` trains two-layer paper models of one layout as one computation), then write
    ``sweep.csv``, the figures and ``report.md``. Returns ``{"trials", "trained", "failed", "rows"}``;
    ``echo`` receives one line per finished trial."""
    from interp_causal.sweep.results import render_sweep, trial_line

    trials = plan(grid, out, max_trials, yes)
    sweep = SweepDir(out)
    todo = [t for t in trials if t.state() != "done"]
    results: dict = {}
    if engine not in ENGINES:
        raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")
    if todo:
        if engine == "ray":
            require_ray()

        def start() -> None:  # once the cluster is reached: a wrong --address leaves nothing behind
            write_json(sweep.spec, {"grid": grid.to_dict(), "swept": grid.swept,
                                    "trials": [{"name": t.name, "values": t.values} for t in trials]})

        def report(trial: Trial, result: dict) -> None:
            if echo is not None:
                echo(trial_line(trial, result))

        results = run_trials(trials, cpus_per_trial, address, progress=progress, engine=engine, on_result=report,
                             on_start=start)
    rendered = render_sweep(out)
    failed = {name: r["error"] for name, r in results.items() if "error" in r}
    return {"trials": len(trials), "trained": len(todo), "failed": failed, "rows": rendered["rows"],
            "figures": rendered["figures"]}
