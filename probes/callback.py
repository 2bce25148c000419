"""Probing inside a training framework: the project's ``Trainer`` and the Hugging Face ``Trainer``,
both through one :class:`~probes.monitor.ProbeMonitor`.

    callback = ProbeCallback(default_suite(parents), probe_tokens, schedule=every(50))
    trainer = Trainer(..., callbacks=[callback])                     # interp_causal's trainer
    hf_trainer.add_callback(ProbeMonitor(suite, tokens).hf_callback())   # transformers.Trainer

A ``ProbeCallback`` is a monitor that reads the trainer: ``step`` (steps completed), ``model``
(the up-to-date model) and ``run_dir`` (a path or None; records go to ``run_dir / filename``).
Step 0 and the final step are always probed; at the end, :meth:`ProbeCallback.summary` gives the
trainer the mechanisms found (:func:`probes.summarize`).

Cost: the default suite (attention, induction and the ridge copying probe) on a 128-sequence
batch is one small forward pass plus two small solves, about 20 ms on one CPU core for the
paper's 2-layer model (S=10, T=20), against about 11 ms for one training step at batch 1024
(sampling included): 2-3% when probing every 50 steps (``make bench``, ``probe_overhead``).
scikit-learn's logistic copying probe is slower: give it its own callback on a coarser schedule,
e.g. ``log_spaced(4)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probes.formation import summarize
from probes.monitor import FILENAME, ProbeMonitor


class ProbeCallback(ProbeMonitor):
    """A :class:`ProbeMonitor` driven by a trainer's callback hooks (any object with ``step``,
    ``model`` and ``run_dir``); same arguments, without ``run_dir``, which the trainer gives."""

    def __init__(self, suite, tokens, schedule=50, site_map=None, filename: str = FILENAME, threads: int | None = 1,
                 batch_size: int | None = None, **context: Any):
        super().__init__(suite, tokens, schedule, None, site_map, filename, threads, batch_size, **context)

    def on_train_begin(self, trainer: Any) -> None:
        # A resumed run starts past 0; its earlier steps were probed by the run that wrote them.
        if trainer.step == 0:
            self.probe_trainer(trainer)

    def on_step_end(self, trainer: Any) -> None:
        if trainer.step in self.schedule:
            self.probe_trainer(trainer)

    def on_train_end(self, trainer: Any) -> None:
        self.probe_trainer(trainer)

    def probe_trainer(self, trainer: Any) -> None:
        """Probe ``trainer.model`` at ``trainer.step`` (once per step), writing into its run directory."""
        run_dir = getattr(trainer, "run_dir", None)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.probe(trainer.model, int(trainer.step))

    def summary(self, trainer: Any) -> dict[str, Any]:
        """``{"mechanisms": summarize(records)}`` over every probed step, those written before a
        resume included; the key is ``"<stem>_mechanisms"`` for another ``filename``."""
        key = "mechanisms" if self.filename == FILENAME else f"{Path(self.filename).stem}_mechanisms"
        return {key: summarize(self.records())}


def hf_trainer_callback(monitor: ProbeMonitor):
    """A ``transformers.TrainerCallback`` calling ``monitor`` with the Hugging Face ``Trainer``'s
    model and ``state.global_step``: at the start, after every scheduled step, and at the end."""
    from transformers import TrainerCallback

    class ProbeMonitorCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 0:
                monitor.probe(model, 0)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            monitor(model, state.global_step)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            monitor.probe(model, state.global_step)

    return ProbeMonitorCallback()
