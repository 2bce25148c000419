"""Probing any training loop: a monitor called with the model and the step.

    monitor = ProbeMonitor(suite, tokens, schedule=every(50) | log_spaced(10), run_dir="runs/mine")
    for step in range(steps):
        ...                                   # the user's own loop
        monitor(model, step)                  # probes when the schedule says; returns the result or None
    monitor.formation("induction", "prefix_matching", threshold=0.5)   # when it formed, and where

The same object serves the project's ``Trainer`` (:class:`~probes.callback.ProbeCallback`) and the
Hugging Face ``Trainer`` (:meth:`ProbeMonitor.hf_callback`). Each probe appends its records,
with a ``step`` field, to ``run_dir / filename`` in one write (a crash never tears a line), and
keeps them in ``monitor.rows``. The model is probed in eval mode under ``torch.no_grad()`` with
``threads`` intra-op threads (default 1: on 2 busy cores a second spinning thread made each
probe 10-20x slower), then put back as it was. Probes draw no numbers from the global random
generators, so probing never changes training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from probes.adapters import unwrap_nnsight
from probes.files import append_jsonl, read_jsonl
from probes.formation import track
from probes.inputs import check_tokens
from probes.records import ProbeResult, as_dicts, jsonl_lines
from probes.schedule import Schedule, as_schedule
from probes.sites import SiteMap
from probes.suite import ProbeSuite

FILENAME = "probes.jsonl"


class ProbeMonitor:
    """Run ``suite`` on ``tokens`` ``[batch, pos]`` at the steps of ``schedule`` (a Schedule, an int N
    for every N steps, or a list of steps). run_dir: where ``filename`` is appended (None: keep the
    rows in memory only). ``context``: per-batch data for the probes (``reference``, ``targets``).
    batch_size: the suite's chunk size (None: automatic)."""

    def __init__(
        self,
        suite: ProbeSuite,
        tokens: torch.Tensor,
        schedule: Schedule | int | list[int] = 50,
        run_dir: str | Path | None = None,
        site_map: SiteMap | None = None,
        filename: str = FILENAME,
        threads: int | None = 1,
        batch_size: int | None = None,
        **context: Any,
    ):
        if not isinstance(suite, ProbeSuite):
            raise TypeError(f"suite: expected a ProbeSuite, got {type(suite).__name__}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: expected None or an int >= 1, got {threads!r}")
        if run_dir is not None and not isinstance(run_dir, (str, Path)):
            raise TypeError(f"run_dir: expected None or a path, got {type(run_dir).__name__}")
        self.suite = suite
        self.tokens = check_tokens(tokens)
        self.schedule = as_schedule(schedule)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.site_map, self.filename, self.threads, self.batch_size = site_map, filename, threads, batch_size
        self.context = context
        self.rows: list[dict[str, Any]] = []
        self.last_step: int | None = None

    def __repr__(self) -> str:
        return f"ProbeMonitor({self.suite!r}, schedule={self.schedule!r}, run_dir={self.run_dir})"

    @property
    def path(self) -> Path | None:
        """The JSON-lines file the records go to (None without a run directory)."""
        return None if self.run_dir is None else self.run_dir / self.filename

    def __call__(self, model: nn.Module, step: int) -> ProbeResult | None:
        """Probe ``model`` if ``step`` is scheduled (and not probed yet); the result, else None."""
        step = _check_step(step)
        return self.probe(model, step) if step in self.schedule and step != self.last_step else None

    def probe(self, model: nn.Module, step: int) -> ProbeResult | None:
        """Probe ``model`` now, as step ``step``, whatever the schedule (once per step: None if done)."""
        step = _check_step(step)
        if step == self.last_step:
            return None
        module = unwrap_nnsight(model)  # an nnsight wrapper is no nn.Module; its module has the mode
        modules = [module] if isinstance(module, nn.Module) else []
        was_training = [m.training for m in modules]
        threads = torch.get_num_threads()
        for m in modules:
            m.eval()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                result = self.suite.run(model, self.tokens, site_map=self.site_map, batch_size=self.batch_size,
                                        **self.context)
        finally:
            for m, was in zip(modules, was_training):
                m.train(was)
            torch.set_num_threads(threads)
        self.last_step = step
        self.rows += [{**row, "step": step} for row in as_dicts(result.records)]
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_jsonl(self.path, jsonl_lines(result.records, step=step))
        return result

    def records(self) -> list[dict[str, Any]]:
        """Every record written so far, those of earlier runs into the same file included."""
        return read_jsonl(self.path) if self.path is not None and self.path.is_file() else list(self.rows)

    def formation(self, probe: str, metric: str, threshold: float, layer: int | None = None,
                  head: int | None = None, increasing: bool = True) -> dict[str, Any] | None:
        """When and where ``probe``'s ``metric`` formed: see :func:`probes.formation.track`."""
        return track(self.records(), probe, metric, threshold, layer=layer, head=head, increasing=increasing)

    def hf_callback(self):
        """A ``transformers.TrainerCallback`` that calls this monitor from the Hugging Face ``Trainer``
        (the model at step 0, at every scheduled ``global_step``, and at the end)."""
        from probes.callback import hf_trainer_callback

        return hf_trainer_callback(self)


def _check_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected an int >= 0, got {step!r}")
    return step

