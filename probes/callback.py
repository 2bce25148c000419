"""Probing during training: a duck-typed callback that runs a suite on a fixed batch on a schedule.

    callback = ProbeCallback(default_suite(parents), probe_tokens, schedule=every(50))
    trainer = Trainer(..., callbacks=[callback])

The trainer only needs ``step`` (steps completed), ``model`` (the up-to-date model) and
``run_dir`` (a path or None). Each probe appends the records, with a ``step`` field, to
``run_dir / "probes.jsonl"`` in one write, and keeps them in ``callback.rows``; at the end,
:meth:`ProbeCallback.summary` gives the trainer the mechanisms found (:func:`probes.summarize`). Step 0 and the
final step are always probed. The model is probed in eval mode under ``torch.no_grad()`` (the
gradient probe enables gradients for its own leaf bias only) and put back in the mode it was in.
Probes draw no numbers from the global random generators, so probing never changes training.

Cost: the default suite (attention, induction and the ridge copying probe) on a 128-sequence
batch is one small forward pass plus two small solves, about 20 ms on one CPU core for the
paper's 2-layer model (S=10, T=20), against about 11 ms for one training step at batch 1024
(sampling included): 2-3% when probing every 50 steps (``make bench``, ``probe_overhead_ratio``).
scikit-learn's logistic copying probe is slower: give it its own callback on a coarser schedule,
e.g. ``log_spaced(4)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from probes.inputs import check_tokens
from probes.files import append_jsonl, read_jsonl
from probes.formation import summarize
from probes.records import as_dicts, jsonl_lines
from probes.schedule import Schedule, as_schedule
from probes.sites import SiteMap
from probes.suite import ProbeSuite

FILENAME = "probes.jsonl"


class ProbeCallback:
    """Run ``suite`` on ``tokens`` ``[batch, pos]`` at the steps of ``schedule`` (a Schedule, an int N
    for every N steps, or a list of steps). ``context``: per-batch data for the probes, e.g.
    ``reference`` or ``targets`` ``[batch, vocab]``. threads: torch intra-op threads while probing,
    restored afterwards (None leaves them alone); the default 1 because the probe batch is small
    and, on 2 busy cores, a second spinning thread made each probe 10-20x slower."""

    def __init__(
        self,
        suite: ProbeSuite,
        tokens: torch.Tensor,
        schedule: Schedule | int | list[int] = 50,
        site_map: SiteMap | None = None,
        filename: str = FILENAME,
        threads: int | None = 1,
        **context: Any,
    ):
        if not isinstance(suite, ProbeSuite):
            raise TypeError(f"suite: expected a ProbeSuite, got {type(suite).__name__}")
        self.suite = suite
        self.tokens = check_tokens(tokens)
        self.schedule = as_schedule(schedule)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: expected None or an int >= 1, got {threads!r}")
        self.site_map, self.filename, self.threads, self.context = site_map, filename, threads, context
        self.rows: list[dict[str, Any]] = []
        self.last_step: int | None = None

    def on_train_begin(self, trainer: Any) -> None:
        # A resumed run starts past 0; its earlier steps were probed by the run that wrote them.
        if trainer.step == 0:
            self.probe(trainer)

    def on_step_end(self, trainer: Any) -> None:
        if trainer.step in self.schedule:
            self.probe(trainer)

    def on_train_end(self, trainer: Any) -> None:
        self.probe(trainer)

    def summary(self, trainer: Any) -> dict[str, Any]:
        """``{"mechanisms": summarize(records)}`` over every probed step, those written before a
        resume included; the key is ``"<stem>_mechanisms"`` for another ``filename``."""
        path = self._path(trainer)
        rows = read_jsonl(path) if path is not None and path.is_file() else self.rows
        key = "mechanisms" if self.filename == FILENAME else f"{Path(self.filename).stem}_mechanisms"
        return {key: summarize(rows)}

    def _path(self, trainer: Any) -> Path | None:
        run_dir = getattr(trainer, "run_dir", None)
        return None if run_dir is None else Path(run_dir) / self.filename

    def probe(self, trainer: Any) -> None:
        """Probe ``trainer.model`` now (once per step) and write the records."""
        step = int(trainer.step)
        if step == self.last_step:
            return
        model = trainer.model
        was_training, threads = model.training, torch.get_num_threads()
        model.eval()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                result = self.suite.run(model, self.tokens, site_map=self.site_map, **self.context)
        finally:
            model.train(was_training)
            torch.set_num_threads(threads)
        self.last_step = step
        self.rows += [{**row, "step": step} for row in as_dicts(result.records)]
        path = self._path(trainer)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            append_jsonl(path, jsonl_lines(result.records, step=step))
