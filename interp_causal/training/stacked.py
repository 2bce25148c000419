"""Train K paper models as one computation: their weights stacked, one forward and backward a step.

    trainers = [start_run(config, out / name) for name, config in configs.items()]
    fit_stacked(trainers)          # each run directory as if trained alone

Each :class:`~interp_causal.training.trainer.Trainer` keeps everything of its own (data stream,
optimiser, schedule, evaluations, checkpoints, callbacks, guard); only the step's forward and
backward pass is shared (:func:`interp_causal.models.structured.stacked_last_logits`), and each
model's gradient is that of its own loss. So every run ends where it would have ended trained
alone (tests/test_stacked.py: to 1e-5). On 2 cores, 20 many-trees models (S = 3) train in about
4.0 ms per model-step all in (sampling, step, evaluations) stacked, against 5.6 ms one after
another (``make bench``, ``stacked_trees_step_ms_k20``). The gain is the larger ops using both
threads; at one thread stacking is no faster, since the step is bound by passes over memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp_causal.training.trainer import Trainer, TrainingDiverged, soft_target_loss

# The most models one stacked computation trains: a group holds all its trainers' data at once
# (a paper-sgd pool of 2^20 sequences is about 210 MB), and past about 20 the step gains no more.
MAX_STACK = 32


def stack_reason(trainer: Trainer) -> str | None:
    """Why ``trainer`` cannot train stacked with others, or None when it can."""
    from interp_causal.models import structured

    if trainer.forward == "hooked":
        return "it trains through the hooked forward (forward='hooked')"
    if trainer._patterns is not None:
        return "it trains with ablated or clamped heads"
    reason = structured.unsupported_reason(trainer.model)
    if reason is None and len(structured.paper_layout(trainer.model).heads) != 2:
        reason = "the stacked path needs the two-layer paper model"
    return reason


def stack_key(trainer: Trainer) -> tuple | None:
    """Trainers with equal keys (not None) can train stacked: the same layout and batch size."""
    from interp_causal.models import paper_layout

    if stack_reason(trainer) is not None:
        return None
    return (paper_layout(trainer.model), trainer.recipe.batch_size, str(trainer.model.unembed.W_U.device))


def fit_stacked(trainers: Sequence[Trainer], until: int | None = None, progress: bool | None = None) -> list[dict]:
    """Train every trainer up to its ``recipe.steps`` (or ``until``), as :meth:`Trainer.fit` does,
    stepping the models together; return ``{"history": rows}`` per trainer, or ``{"error": message}``
    for one whose guard stopped it (its summary is written; the others go on without it)."""
    from tqdm.auto import tqdm

    from interp_causal.models import structured

    trainers = list(trainers)
    if not trainers:
        raise ValueError("trainers: expected at least one Trainer, got none")
    keys = []
    for k, trainer in enumerate(trainers):
        if not isinstance(trainer, Trainer):
            raise TypeError(f"trainers[{k}]: expected a Trainer, got {type(trainer).__name__}")
        reason = stack_reason(trainer)
        if reason is not None:
            raise ValueError(f"trainers[{k}]: cannot train stacked: {reason}")
        keys.append(stack_key(trainer))
    if len(set(keys)) > 1:
        raise ValueError("trainers: stacked models need one layout and one batch size; got "
                         f"{sorted({(str(k[0]), k[1]) for k in keys})}")
    results: list[dict | None] = [None] * len(trainers)
    stops = [t.begin(until) for t in trainers]
    active = [k for k, t in enumerate(trainers) if t.step < stops[k]]
    total = sum(stops[k] - trainers[k].step for k in active)
    bar = tqdm(total=total, desc=f"train {len(trainers)} stacked", unit="step", leave=False,
               disable=None if progress is None else not progress)
    try:
        while active:
            group = [trainers[k] for k in active]
            batches = [t.next_batch() for t in group]  # each from its own stream (drawn together: slower)
            for t in group:
                t.before_backward()
            logits = structured.stacked_last_logits([t.model for t in group],
                                                    torch.stack([b.tokens for b in batches]))  # [K, B, S]
            target = torch.stack([b.target for b in batches]).to(logits.device)
            losses = soft_target_loss(logits, target)  # [K]: each model's own loss
            losses.sum().backward()  # model k's gradient is that of its own loss alone
            for t in group:
                t.after_backward()
            for k, t, loss in zip(list(active), group, losses.tolist()):
                try:
                    t.end_step(loss)
                except TrainingDiverged as exc:
                    t.write_summary()
                    results[k] = {"error": f"TrainingDiverged: {exc}"}
                    active.remove(k)
                    continue
                if t.step >= stops[k]:
                    active.remove(k)
            bar.update(len(group))
    finally:
        bar.close()
    for k, t in enumerate(trainers):
        if results[k] is None:
            t.pause()
            results[k] = {"history": t.end()}
    return results
