"""A run directory: the one place that knows its file names, how each is written and read.

    run = RunDir("runs/demo")
    run.read_metrics()          # rows of metrics.jsonl, a torn last line skipped
    run.read_summary()          # summary.json: one writer (the trainer), one schema

| file | written by | what |
|---|---|---|
| ``config.json`` | :meth:`RunDir.start` | everything needed to rebuild the run (task, model, recipe, seed, forward) |
| ``metrics.jsonl`` | the trainer, one row per evaluation | ``step, train_loss, test_loss, bayes_loss, <baseline>_loss, lr, elapsed_s`` |
| ``probes.jsonl`` | ``probes.ProbeCallback`` | one probe record per line, with its ``step`` |
| ``checkpoint.pt`` | the trainer, atomically | model, optimiser, schedule, data streams: resumes bit for bit |
| ``summary.json`` | the trainer at the end of ``fit`` | :data:`SUMMARY_KEYS` (``threads``: those training ran on), ``data_worker`` (a worker process drew the data), what callbacks add (``mechanisms``) |
| ``probe_summary.json`` | ``interp-causal probe`` | the full suite on the checkpoint; for Hugging Face checkpoints, the head map and formation steps |
| ``trial.json`` | a sweep's trial (:mod:`interp_causal.sweep`) | the node, host, pid, threads and wall time it ran with |
| ``reproduction.json`` | ``interp-causal reproduce`` | our numbers beside the paper's (``rows``) |
| ``report.md``, ``figures/`` | ``interp-causal report`` / ``reproduce`` | the one-page report and its PNGs |

JSON files are written atomically; JSON lines follow the one torn-line rule of :mod:`probes.files`.
"""

from __future__ import annotations

import os
from pathlib import Path

from probes.files import append_jsonl, atomic_write, jsonl_text, read_json, read_jsonl, rewrite_jsonl, write_json

from interp_causal.training.checkpoint import load_checkpoint, save_checkpoint

# the keys every summary.json has; callbacks add theirs (the probe callback adds "mechanisms")
SUMMARY_KEYS = ("steps", "seconds", "wall_s", "final_test_loss", "bayes_loss", "gap", "gap_pct", "baselines", "threads")


class _File:
    """A file of a run directory: on the class, its name (``RunDir.metrics == "metrics.jsonl"``);
    on an instance, its path (``run.metrics``)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, run: "RunDir | None", owner: type | None = None):
        return self.name if run is None else run.path / self.name


class RunDir:
    """The files of one run (or one reproduction) under ``path``. Creating the object touches
    nothing; :meth:`create` and the writers make the directory when they need it."""

    config = _File("config.json")
    metrics = _File("metrics.jsonl")
    probes = _File("probes.jsonl")
    checkpoint = _File("checkpoint.pt")
    summary = _File("summary.json")
    probe_summary = _File("probe_summary.json")
    reproduction = _File("reproduction.json")
    trial = _File("trial.json")
    report = _File("report.md")
    figures = _File("figures")

    def __init__(self, path: str | os.PathLike):
        if isinstance(path, RunDir):
            path = path.path
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"run_dir: expected a path, got {type(path).__name__}")
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---- life cycle ----------------------------------------------------------------------------
    def create(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def holds_run(self) -> bool:
        """A training run has saved a checkpoint here."""
        return self.checkpoint.is_file()

    def start(self, config: dict) -> None:
        """Make this the directory of a new run of ``config``: refuses one that already holds a
        run, clears logs left by an unfinished start, writes ``config.json``."""
        if self.holds_run():
            raise FileExistsError(f"out: {self.path} already holds a run; pass resume to continue it "
                                  f"or choose another directory")
        self.create().clear_logs()
        self.write_config(config)

    def clear_logs(self) -> None:
        """Remove the JSON-lines logs (a run starting from step 0 writes them anew)."""
        for stale in self.path.glob("*.jsonl"):
            stale.unlink()

    def truncate_logs(self, step: int) -> list[dict]:
        """Drop log rows after ``step`` (written after the checkpoint a run resumes from) and torn
        last lines, in every ``*.jsonl``; returns the metrics rows kept."""
        metrics: list[dict] = []
        for log in sorted(self.path.glob("*.jsonl")):
            kept = rewrite_jsonl(log, lambda row: row.get("step", 0) <= step)
            if log.name == RunDir.metrics:
                metrics = kept
        return metrics

    # ---- config, metrics, probes ---------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        write_json(self.config, config)

    def read_config(self) -> dict:
        if not self.config.is_file():
            raise FileNotFoundError(f"run_dir: {self.path} holds no run (no {RunDir.config})")
        return read_json(self.config)

    def append_metrics(self, row: dict) -> None:
        append_jsonl(self.create().metrics, [row])

    def read_metrics(self) -> list[dict]:
        if not self.metrics.is_file():
            raise FileNotFoundError(f"run_dir: {self.path} has no {RunDir.metrics}; train a run into it first")
        return read_jsonl(self.metrics)

    def write_probes(self, rows: list[dict]) -> None:
        """Replace ``probes.jsonl`` with ``rows`` at once (probing saved checkpoints)."""
        atomic_write(self.probes, jsonl_text(rows).encode("utf-8"))

    def read_probes(self) -> list[dict] | None:
        """The probe records of the run, or None when it was trained without probes."""
        return read_jsonl(self.probes) if self.probes.is_file() else None

    # ---- checkpoint ----------------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        save_checkpoint(self.create().checkpoint, state)

    def load_checkpoint(self) -> dict:
        return load_checkpoint(self.checkpoint)

    # ---- summaries and reports -----------------------------------------------------------------
    def write_summary(self, summary: dict) -> None:
        missing = [k for k in SUMMARY_KEYS if k not in summary]
        if missing:
            raise ValueError(f"summary: missing keys {missing}; a run's summary has {list(SUMMARY_KEYS)}")
        write_json(self.summary, summary)

    def read_summary(self) -> dict:
        return read_json(self.summary)

    def write_probe_summary(self, result: dict) -> None:
        write_json(self.probe_summary, result)

    def write_trial(self, info: dict) -> None:
        write_json(self.trial, info)

    def read_trial(self) -> dict | None:
        """Where a sweep trained this run (``trial.json``), or None for a run not trained by a sweep."""
        return read_json(self.trial) if self.trial.is_file() else None

    def write_reproduction(self, reproduction: dict) -> None:
        write_json(self.reproduction, reproduction)

    def read_reproduction(self) -> dict | None:
        """What ``interp-causal reproduce`` wrote here (its ``rows`` compare with the paper), or None."""
        return read_json(self.reproduction) if self.reproduction.is_file() else None

    def write_report(self, text: str) -> None:
        atomic_write(self.report, text.encode("utf-8"))

    def figure(self, name: str) -> Path:
        return self.figures / name

    def figure_names(self) -> list[str]:
        return sorted(p.name for p in self.figures.glob("*.png"))

