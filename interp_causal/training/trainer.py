"""A small trainer with callbacks, held-out scoring against Bayes, and exact resume."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

from interp_causal.names import FORWARDS
from interp_causal.tasks import InContextTask, TaskBatch, baseline_losses
from interp_causal.training.interventions import Interventions, frozen_at, stage_freezes
from interp_causal.training.recipes import Recipe
from interp_causal.training.run_dir import RunDir

TEST_SEED_OFFSET = 1_000_003  # the held-out set never shares a stream with training data
# fresh draws (no pool) come in blocks of about this many sequences (Trainer.pool_size)
FRESH_BLOCK = 2**14
GUARD_PATIENCE = 3  # evaluations in a row far above the uniform guess before the guard stops a run


class TrainingDiverged(RuntimeError):
    """Raised by :meth:`Trainer.fit` when the guard stops a run; ``step`` and ``loss`` say where,
    ``kept`` the step of the last good checkpoint (None without one)."""

    def __init__(self, message: str, step: int, loss: float, kept: int | None):
        super().__init__(message)
        self.step, self.loss, self.kept = step, loss, kept


class Callback(Protocol):
    """Any subset of these methods; each receives the trainer."""

    def on_train_begin(self, trainer: "Trainer") -> None: ...
    def on_step_end(self, trainer: "Trainer") -> None: ...
    def on_eval(self, trainer: "Trainer", row: dict) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...
    def summary(self, trainer: "Trainer") -> dict: ...  # entries added to summary.json


def check_forward(forward: object, model=None) -> str:
    """``forward`` if it is one of ``names.FORWARDS`` and, for ``"structured"``, ``model`` can take it."""
    from interp_causal.models import structured

    if forward not in FORWARDS:
        raise ValueError(f"forward: expected one of {FORWARDS}, got {forward!r}")
    if forward == "structured" and model is not None:
        reason = structured.unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"forward: 'structured' cannot train this model: {reason}; use 'auto' or 'hooked'")
    return forward


def last_position_logits(model, tokens: torch.Tensor, forward: str = "auto", patterns=None) -> torch.Tensor:
    """The logits at the last position, ``[batch, S]``, computed as ``forward`` says.

    ``"hooked"``: ``model(tokens)``, any TransformerLens model, hooks and all. ``"structured"``: the
    paper model's structured path (:mod:`interp_causal.models.structured`), the same function from
    the same parameters at the last position only, 4x faster. ``"auto"``: structured exactly when
    ``structured.supports(model)`` (a hook-free paper ``HookedTransformer`` or ``TransformerBridge``);
    else a hook-free standard ``HookedTransformer``'s last block at the last position only
    (:mod:`interp_causal.models.last_position`) when ``last_position.supports(model)``; else hooked.
    """
    from interp_causal.models import last_position, structured

    if patterns is not None:
        return structured.last_logits(model, tokens, patterns(tokens))
    if forward == "structured" or (forward == "auto" and structured.supports(model)):
        return structured.last_logits(model, tokens)
    if forward == "auto" and last_position.supports(model):
        return last_position.last_logits(model, tokens)
    return model(tokens, return_type="logits")[:, -1]


def last_position_loss(model, batch: TaskBatch, forward: str = "auto", patterns=None) -> torch.Tensor:
    """Expected cross-entropy at the last position against the soft target ``[n, S]``."""
    return soft_target_loss(last_position_logits(model, batch.tokens, forward, patterns), batch.target)


def soft_target_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_s target(s) log softmax(logits)(s)``: ``[..., B, S]`` to ``[...]``
    (a scalar for one model's batch, ``[K]`` for K stacked models' batches)."""
    return -(target * logits.log_softmax(-1)).sum(-1).mean(-1)


class Trainer:
    """Trains ``model`` on fresh (or pooled) samples of ``task`` following ``recipe``.

    ``trainer.model`` is always the up-to-date hooked model, ``trainer.step`` counts completed
    steps, ``trainer.run_dir`` is where metrics, checkpoints and callbacks write (or None; the
    trainer creates it), ``trainer.run`` its :class:`RunDir`. ``forward`` (``"auto"``,
    ``"structured"``, ``"hooked"``): how a batch's logits are computed, see
    :func:`last_position_logits`. At the end of :meth:`fit` the trainer writes ``summary.json``.

    ``interventions`` (:class:`~interp_causal.training.interventions.Interventions` or its dict):
    heads ablated or clamped in every forward pass (attached to ``model`` here, checked first) and
    parameters frozen for some steps; with ``recipe.stage_split`` the trainer also trains
    stage-wise (only the first layer before the split, everything else after it).

    ``prefetch`` (``True``, ``False``, ``"auto"``): during :meth:`fit`, draw the data in a worker
    process while training on the other threads (:mod:`~interp_causal.training.prefetch`; the same
    batches, bit for bit). ``"auto"`` does so where it was measured to pay: long runs of
    single-parent tasks in a process with two threads or more (``prefetch.prefetch_wanted``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: InContextTask,
        recipe: Recipe,
        run_dir: str | Path | None = None,
        seed: int = 0,
        callbacks: Sequence[Callback] = (),
        config: dict | None = None,
        progress: bool | None = None,
        forward: str = "auto",
        interventions: Interventions | dict | None = None,
        guard: bool = True,
        prefetch: bool | str = "auto",
    ) -> None:
        from interp_causal.models import check_model_matches_task

        if not isinstance(recipe, Recipe):
            raise TypeError(f"recipe: expected a Recipe, got {type(recipe).__name__}")
        check_model_matches_task(model, task)
        if not isinstance(interventions, Interventions):
            interventions = Interventions.from_dict(interventions)
        interventions.check_forward(forward, model)
        self.interventions = interventions
        stages = stage_freezes(recipe.stage_split, model.cfg.n_layers) if recipe.stage_split else ()
        self._freezes = interventions.frozen_parameters(model, stages)  # checked before anything is attached
        self.attached = interventions.attach(model, task)
        # the paper model's structured path runs ablated and clamped heads as given patterns (the
        # hooks stay attached for evaluation by probes and for whoever calls the model)
        self._patterns = interventions.structured_patterns(model, task) if forward != "hooked" else None
        self.forward = check_forward(forward, model) if self._patterns is None else forward
        self.model, self.task, self.recipe = model, task, recipe
        self.run = RunDir(run_dir).create() if run_dir is not None else None
        self.seed = seed
        self.callbacks = list(callbacks)
        self.config = config or {}
        self.progress = progress
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict] = []
        self._created = time.perf_counter()
        self.optimizer = recipe.make_optimizer(model.parameters())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, recipe.lr_factor)
        self.data_rng = torch.Generator().manual_seed(seed)
        self._pool: TaskBatch | None = None
        self._pool_rng_state: torch.Tensor | None = None
        self._cursor = 0
        self._loss_sum, self._loss_count = 0.0, 0
        self.guard, self._bad_evals, self.diverged, self._last_saved = guard, 0, None, None
        if not (isinstance(prefetch, bool) or prefetch == "auto"):
            raise ValueError(f"prefetch: expected True, False or 'auto', got {prefetch!r}")
        self.prefetch, self._prefetcher, self._threads = prefetch, None, None
        self._fit_threads, self._data_worker = None, False  # how the last fit trained: summary.json
        test_rng = torch.Generator().manual_seed(seed + TEST_SEED_OFFSET)
        self.test_batch = task.sample(recipe.test_size, test_rng)
        self.reference_losses = baseline_losses(self.test_batch.tokens, self.test_batch.target, task)

    # ---- data ------------------------------------------------------------------------------
    @property
    def pool_size(self) -> int:
        """Sequences drawn at once: the recipe's pool, or for fresh draws a block of whole batches
        (:data:`FRESH_BLOCK`), each sequence still used once. The sampler's per-call work is
        amortised over the block: a random tree at S = 3 draws 1024 sequences in 1.2 ms alone
        and in 0.5 ms per 1024 within 16384."""
        bs = self.recipe.batch_size
        return self.recipe.pool_size or bs * max(1, FRESH_BLOCK // bs)

    def next_batch(self) -> TaskBatch:
        bs, pool_size = self.recipe.batch_size, self.pool_size
        if self._pool is None or self._cursor + bs > pool_size:
            if self._prefetcher is not None:  # the same pool from the same state, drawn meanwhile
                self._pool, self._pool_rng_state, after = self._prefetcher.next()
                self.data_rng.set_state(after)
            else:
                self._pool_rng_state = self.data_rng.get_state()
                self._pool = self.task.sample(pool_size, self.data_rng)
            self._cursor = 0
        batch = self._pool[self._cursor : self._cursor + bs]
        self._cursor += bs
        return batch

    # ---- training --------------------------------------------------------------------------
    def train_step(self, batch: TaskBatch) -> float:
        self.before_backward()
        loss = last_position_loss(self.model, batch, self.forward, self._patterns)
        loss.backward()
        self.after_backward()
        return loss.item()

    def before_backward(self) -> None:
        """Ready the model for a step's forward and backward pass (its gradients cleared)."""
        if not self.model.training:  # train() walks every submodule: 0.4 ms a step on a HookedTransformer
            self.model.train()
        self.optimizer.zero_grad(set_to_none=True)

    def after_backward(self) -> None:
        """Apply the gradients the step's backward pass left in the model: optimiser and schedule."""
        for p in frozen_at(self._freezes, self.step):
            p.grad = None  # the optimiser skips a parameter without a gradient: no step, no weight decay
        self.optimizer.step()
        self.scheduler.step()

    @torch.no_grad()
    def evaluate(self, chunk: int = 8192) -> float:
        """Test loss on the held-out set."""
        self.model.eval()
        total, n = 0.0, len(self.test_batch)
        for start in range(0, n, chunk):
            part = self.test_batch[start : start + chunk]
            total += float(last_position_loss(self.model, part, self.forward, self._patterns)) * len(part)
        return total / n

    def fit(self, until: int | None = None) -> list[dict]:
        """Train up to ``recipe.steps`` in total (or stop early at ``until``, leaving a checkpoint
        to resume from) and write ``summary.json``. Returns the metrics rows written so far."""
        stop = self.begin(until)
        bar = self.progress_bar()
        try:
            self._start_prefetch(stop - self.step)
            self._fit_threads, self._data_worker = torch.get_num_threads(), self._prefetcher is not None
            while self.step < stop:
                self.end_step(self.train_step(self.next_batch()), bar)
            self.pause()
        except TrainingDiverged:
            self.write_summary()
            raise
        finally:
            self._stop_prefetch()
            bar.close()
        return self.end()

    def _start_prefetch(self, steps_left: int) -> None:
        """Start the data worker when ``prefetch`` asks for it; training keeps the other threads."""
        from interp_causal.training.prefetch import PoolPrefetcher, prefetch_wanted

        if not prefetch_wanted(self.prefetch, steps_left, self.task):
            return
        self._prefetcher = PoolPrefetcher(self.task, self.pool_size, self.data_rng.get_state())
        self._threads = torch.get_num_threads()
        torch.set_num_threads(max(1, self._threads - 1))  # two busy processes on two cores, not three threads

    def _stop_prefetch(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None
            torch.set_num_threads(self._threads)

    # The pieces of :meth:`fit`, for loops that make the steps themselves (training.stacked).
    def begin(self, until: int | None = None) -> int:
        """Start (or go on with) training; return the step to stop at (``until``, at most ``recipe.steps``)."""
        total = self.recipe.steps
        stop = total if until is None else min(int(until), total)
        fresh = self.step == 0 and not self.history
        if fresh and self.run is not None:
            if self.run.holds_run():
                raise FileExistsError(f"run_dir: {self.run.path} already holds a run; resume it "
                                      f"(training.resume_run, or trainer.resume()) or choose another directory")
            self.run.clear_logs()  # left by a start that never reached its first checkpoint
        self._call("on_train_begin")
        if fresh:
            self._record()
        self._started = time.perf_counter() - self.elapsed
        return stop

    def progress_bar(self):
        from tqdm.auto import tqdm

        return tqdm(total=self.recipe.steps, initial=self.step, desc="train", unit="step",
                    disable=self._bar_disabled(), leave=False)

    def end_step(self, loss: float, bar=None) -> None:
        """Account for a step just taken (its training ``loss``): counters, guard, callbacks and,
        on schedule, an evaluation with its checkpoint. Raises :class:`TrainingDiverged` when the guard stops the run."""
        self._loss_sum += loss
        self._loss_count += 1
        self.step += 1
        self.elapsed = time.perf_counter() - self._started
        if bar is not None:
            bar.update(1)
        if self.guard and not math.isfinite(loss):
            self._record()  # the guard stops the run here, before any callback sees the weights
        self._call("on_step_end")
        if self.step % self.recipe.eval_every == 0 or self.step in (self.recipe.steps, self.recipe.stage_split):
            row = self._record()
            if bar is not None:
                bar.set_postfix(test=f"{row['test_loss']:.4f}", bayes=f"{row['bayes_loss']:.4f}")

    def pause(self) -> None:
        """Stopped before the end: keep what was done since the last evaluation."""
        if self.step % self.recipe.eval_every and self.step != self.recipe.steps:
            self.save()

    def write_summary(self) -> None:
        if self.run is not None:
            self.run.write_summary(self.summary())

    def end(self) -> list[dict]:
        """Finish :meth:`fit`: callbacks' ``on_train_end`` and ``summary.json``; the metrics rows."""
        self._call("on_train_end")
        self.write_summary()
        return self.history

    @property
    def run_dir(self) -> Path | None:
        """The run directory's path (what callbacks such as ``probes.ProbeCallback`` write into)."""
        return None if self.run is None else self.run.path

    def summary(self) -> dict:
        """The run's final numbers (``run_dir.SUMMARY_KEYS``) and what each callback's ``summary`` adds."""
        last = self.history[-1]
        bayes = last["bayes_loss"]
        out = {
            "steps": self.step,
            "seconds": round(self.elapsed, 2),
            "wall_s": round(time.perf_counter() - self._created, 2),
            "final_test_loss": last["test_loss"],
            "bayes_loss": bayes,
            "gap": last["test_loss"] - bayes,
            "gap_pct": 100.0 * (last["test_loss"] - bayes) / bayes,
            "baselines": self.reference_losses,
            # the threads training ran on (one fewer than the process has while a data worker draws)
            "threads": self._fit_threads or torch.get_num_threads(),
            "data_worker": self._data_worker,
        }
        if self.interventions:
            out["interventions"] = self.interventions.describe()
        if self.recipe.stage_split:
            out["stage_split"] = self.recipe.stage_split
        for cb in self.callbacks:
            method = getattr(cb, "summary", None)
            if method is not None:
                out.update(method(self))
        if isinstance(out.get("mechanisms"), dict):
            self.interventions.mark(out["mechanisms"])
        if self.diverged is not None:  # a diverged run's heads are noise, not mechanisms
            out.pop("mechanisms", None)
            out["diverged"] = self.diverged
        return out

    def _bar_disabled(self) -> bool | None:
        return None if self.progress is None else not self.progress

    def _record(self) -> dict:
        row = {
            "step": self.step,
            "train_loss": self._loss_sum / self._loss_count if self._loss_count else None,
            "test_loss": self.evaluate(),
            "bayes_loss": self.reference_losses["bayes"],
            **{f"{k}_loss": v for k, v in self.reference_losses.items() if k != "bayes"},
            "lr": self.optimizer.param_groups[0]["lr"],
            "elapsed_s": round(self.elapsed, 3),
        }
        if self.recipe.stage_split:  # the row at the split closes stage 1
            row["stage"] = 1 if self.step <= self.recipe.stage_split else 2
        self._loss_sum, self._loss_count = 0.0, 0
        self.history.append(row)
        if self.run is not None:
            self.run.append_metrics(row)
        sound = self._guard_check(row)  # raises when the guard stops the run
        self._call("on_eval", row)
        if sound:
            self.save()
        return row

    def _guard_check(self, row: dict) -> bool:
        """True when the evaluation is sound and its checkpoint may be kept. With ``guard`` on, a
        loss that is not finite stops the run at once, and a test loss more than ``log S`` above
        the uniform guess for :data:`GUARD_PATIENCE` evaluations in a row stops it then; no
        checkpoint is written for such evaluations, so the last good one stays on disk."""
        if not self.guard:
            return True
        test, train = row["test_loss"], row["train_loss"]
        limit = self.reference_losses["uniform"] + math.log(self.task.vocab_size)
        finite = math.isfinite(test) and (train is None or math.isfinite(train))
        if finite and test <= limit:
            self._bad_evals = 0
            return True
        self._bad_evals += 1
        if finite and self._bad_evals < GUARD_PATIENCE:
            return False
        kept = self._last_saved
        if finite:
            what = f"stayed above {limit:.2f} (the uniform guess + log S) for {self._bad_evals} evaluations"
        else:
            what = "is not finite"
        self.diverged = {"step": self.step, "test_loss": test, "reason": what, "kept_step": kept}
        lr = self.recipe.lr
        hint = f"; the last good checkpoint (step {kept}) is kept: resume it with --lr" if kept is not None else ""
        raise TrainingDiverged(f"diverged at step {self.step}: test loss {test:.4g} {what}; "
                               f"try a lower --lr (now {lr:g}, e.g. {lr / 10:g}){hint}", self.step, test, kept)

    def _call(self, name: str, *args) -> None:
        for cb in self.callbacks:
            method = getattr(cb, name, None)
            if method is not None:
                method(self, *args)

    # ---- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": 1,
            "step": self.step,
            "elapsed": self.elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "data_rng": self.data_rng.get_state(),
            "pool_rng": self._pool_rng_state,
            "cursor": self._cursor,
            "loss_sum": self._loss_sum,
            "loss_count": self._loss_count,
            "config": self.config,
        }

    def save(self) -> None:
        if self.run is not None:
            self.run.save_checkpoint(self.state_dict())
            self._last_saved = self.step

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self._last_saved = self.step
        # the recipe's schedule may have been extended, or its learning rate changed on resume
        self.scheduler.base_lrs = [self.recipe.lr for _ in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["initial_lr"] = self.recipe.lr
            group["lr"] = self.recipe.lr * self.recipe.lr_factor(self.step)
        self._loss_sum, self._loss_count = float(state["loss_sum"]), int(state["loss_count"])
        self._pool_rng_state, self._cursor = state["pool_rng"], int(state["cursor"])
        if self._pool_rng_state is not None:
            rng = torch.Generator()
            rng.set_state(self._pool_rng_state)
            self._pool = self.task.sample(self.pool_size, rng)
        self.data_rng.set_state(state["data_rng"])

    def resume(self, state: dict | None = None) -> None:
        """Continue from the run directory's checkpoint (or an already loaded ``state``); drop any
        log rows written after it."""
        if self.run is None:
            raise ValueError("run_dir: resuming needs the run directory that holds the checkpoint")
        self.load_state_dict(self.run.load_checkpoint() if state is None else state)
        self.history = self.run.truncate_logs(self.step)
