"""Training data drawn in a worker process while the trainer trains (``Trainer(prefetch=...)``).

With the torch ops' sampler, on the chain's paper recipe both the sampler and the training step were
bound by one core each (a step at batch 1024 took 12.6 ms on one thread and 11.9 on two; drawing
its batch 6.2 and 6.0), so on two cores the draws could overlap the steps instead of adding to
them. The C sampler (``tasks/sampler.c``) draws a batch in 1.4 ms at two threads, and training
keeps both threads instead (:func:`prefetch_wanted`). The worker
is a ``torch.utils.data.DataLoader`` worker (one process, one thread, tensors handed over in shared
memory). It draws the same pools from the same generator states, in the same order, as
:meth:`Trainer.next_batch` draws in process: the batches are bit-identical, and checkpoints hold the
same generator states, so a run resumes exactly with or without it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from interp_causal.tasks import InContextTask, TaskBatch

# "auto" prefetches runs of at least this many steps: below it the worker's start and its first
# pool, which the trainer waits for, are not repaid; the paper's chain recipe (2^17 steps) is above it
PREFETCH_MIN_STEPS = 10_000


class _Pools(torch.utils.data.IterableDataset):
    """Endless pools of ``size`` sequences of ``task``, drawn one after another from a generator
    started at ``rng_state``: ``(pool, state before it, state after it)``."""

    def __init__(self, task: InContextTask, size: int, rng_state: torch.Tensor) -> None:
        self.task, self.size, self.rng_state = task, size, rng_state

    def __iter__(self) -> Iterator[tuple[TaskBatch, torch.Tensor, torch.Tensor]]:
        rng = torch.Generator()
        rng.set_state(self.rng_state)
        while True:
            before = rng.get_state()
            pool = self.task.sample(self.size, rng)
            yield pool, before, rng.get_state()


class PoolPrefetcher:
    """Draws the next pool in a worker process while the current one is trained on.

    ``next()`` returns ``(pool, rng state before it, rng state after it)``: what
    ``task.sample(size, rng)`` returns and does to ``rng`` when ``rng`` starts at ``rng_state``, for
    one pool after another. At most one pool waits ahead. :meth:`close` stops the worker (also on
    garbage collection, and the worker dies with the process)."""

    def __init__(self, task: InContextTask, size: int, rng_state: torch.Tensor) -> None:
        loader = torch.utils.data.DataLoader(_Pools(task, size, rng_state), batch_size=None, num_workers=1,
                                             prefetch_factor=1)
        self._it = iter(loader)

    def next(self) -> tuple[TaskBatch, torch.Tensor, torch.Tensor]:
        return next(self._it)

    def close(self) -> None:
        it, self._it = self._it, None
        if it is not None:
            it._shutdown_workers()


def prefetch_wanted(prefetch: bool | str, steps_left: int, task: InContextTask) -> bool:
    """Whether a run of ``steps_left`` more steps on ``task`` draws its data in a worker process:
    ``True`` or ``False`` as given; ``"auto"``: when the process has at least two threads to split
    between the worker and training, the run is long (:data:`PREFETCH_MIN_STEPS`), and the task
    is single-parent, whose sampler draws a whole transition table per sequence, in torch ops
    (``tasks/sampler.c`` is not built). Measured on the paper recipes (2 cores, steady state, ms
    per step all in, worker against in process): chain with the torch sampler 12.8 against
    17.7-19.2; with the C sampler (1.4 ms per batch at two threads) 9.8-9.9 against 7.3-7.9, since
    training then keeps both threads; multi-parent, whose urn sampler is cheap beside its step,
    32-39 against 30-31. So only the torch sampler of a single-parent task is drawn in a worker."""
    if prefetch == "auto":
        from interp_causal.tasks.task import sampler_library

        return (torch.get_num_threads() >= 2 and steps_left >= PREFETCH_MIN_STEPS
                and task.graph.is_single_parent and sampler_library() is None)
    return bool(prefetch)
