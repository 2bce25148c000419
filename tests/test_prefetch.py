"""Data drawn in a worker process (Trainer(prefetch=True)): the same batches as in process, bit for
bit, across pools, checkpoints and resumes; threads given back; worker errors surface."""

from __future__ import annotations

import shutil

import pytest
import torch

from interp_causal.models import paper_model
from interp_causal.tasks import CausalGraph, InContextTask
from interp_causal.training import Recipe, Trainer, TrainingDiverged
from interp_causal.training.prefetch import PREFETCH_MIN_STEPS, prefetch_wanted

TASK = InContextTask(CausalGraph.chain(8), vocab_size=4, alpha=0.1)


def recipe(**kw) -> Recipe:
    base = dict(optimizer="adamw", lr=2e-2, weight_decay=1e-3, schedule="cosine", steps=60, batch_size=32,
                init="zero", pool_size=None, eval_every=20, test_size=128)  # fmt: skip
    base.update(kw)
    return Recipe(**base)


class Recording(Trainer):
    """A trainer that keeps every batch it trains on (the reference: what it was given)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.seen: list[torch.Tensor] = []

    def train_step(self, batch):
        self.seen.append(torch.cat([batch.tokens.flatten().float(), batch.target.flatten()]).clone())
        return super().train_step(batch)


def trained(prefetch, run_dir=None, until=None, rec=None, **kw) -> Recording:
    trainer = Recording(paper_model(TASK), TASK, rec or recipe(**kw), run_dir, seed=3, progress=False,
                        prefetch=prefetch)
    trainer.fit(until=until)
    return trainer


@pytest.mark.parametrize("pool", [None, 96])  # fresh blocks of whole batches; a pool drawn again and again
def test_prefetched_batches_and_weights_equal_in_process(monkeypatch, pool):
    # small blocks, so that 60 steps cross many of them
    monkeypatch.setattr("interp_causal.training.trainer.FRESH_BLOCK", 64)
    here, there = trained(False, pool_size=pool), trained(True, pool_size=pool)
    assert len(here.seen) == len(there.seen) == 60
    assert all(torch.equal(a, b) for a, b in zip(here.seen, there.seen))
    assert not torch.equal(here.seen[0], here.seen[-1])  # the stream moved on
    # the suite runs at one thread, so the main process keeps it and the arithmetic is the same
    for (name, a), b in zip(here.model.state_dict().items(), there.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(here.data_rng.get_state(), there.data_rng.get_state())
    assert [r["test_loss"] for r in here.history] == [r["test_loss"] for r in there.history]
    assert there._prefetcher is None  # the worker was stopped


@pytest.mark.parametrize("pool, until", [(None, 30), (96, 30), (96, 25)])
def test_resume_with_prefetch_is_exact(tmp_path, monkeypatch, pool, until):
    monkeypatch.setattr("interp_causal.training.trainer.FRESH_BLOCK", 64)
    straight = trained(False, pool_size=pool)
    first = trained(True, tmp_path / "r", until=until, pool_size=pool)
    assert first.step == until
    resumed = Recording(paper_model(TASK), TASK, recipe(pool_size=pool), tmp_path / "r", seed=3, progress=False,
                        prefetch=True)
    resumed.resume()
    resumed.fit()
    got = first.seen + resumed.seen
    assert len(got) == 60 and all(torch.equal(a, b) for a, b in zip(straight.seen, got))
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_threads_are_given_back(monkeypatch):
    torch.set_num_threads(2)
    try:
        seen = []
        monkeypatch.setattr(Recording, "train_step", lambda self, b: seen.append(torch.get_num_threads()) or 1.0)
        worker, here = trained(True), trained(False)
        assert set(seen) == {1, 2} and seen[:60] == [1] * 60  # one thread while the worker draws
        assert torch.get_num_threads() == 2
        # summary.json says how the run trained, not what the process has afterwards
        assert (worker.summary()["threads"], worker.summary()["data_worker"]) == (1, True)
        assert (here.summary()["threads"], here.summary()["data_worker"]) == (2, False)
        monkeypatch.undo()
        with pytest.raises(TrainingDiverged):  # and after a run the guard stops
            trained(True, rec=recipe(optimizer="sgd", lr=1e7, weight_decay=0.0))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


class Broken(InContextTask):
    def sample(self, n, generator=None):
        if n > 1000:
            raise RuntimeError("the sampler broke in the worker")
        return super().sample(n, generator)


def test_a_worker_error_reaches_the_trainer():
    task = Broken(CausalGraph.chain(8), vocab_size=4, alpha=0.1)
    trainer = Trainer(paper_model(task), task, recipe(pool_size=2048), seed=0, progress=False, prefetch=True)
    with pytest.raises(RuntimeError, match="the sampler broke in the worker"):
        trainer.fit()
    assert trainer._prefetcher is None


def test_prefetch_is_checked_and_auto_is_for_long_runs_with_threads_and_the_torch_sampler(monkeypatch):
    from interp_causal import compiled

    with pytest.raises(ValueError, match="prefetch: expected True, False or 'auto', got 'yes'"):
        Trainer(paper_model(TASK), TASK, recipe(), prefetch="yes")
    assert prefetch_wanted(True, 1, TASK) and not prefetch_wanted(False, 10**9, TASK)
    assert not prefetch_wanted("auto", 10**9, TASK)  # the suite's one thread: nothing to give a worker
    torch.set_num_threads(2)
    try:
        # the C sampler draws a batch in a fraction of a step: training keeps both threads
        assert (not prefetch_wanted("auto", 10**9, TASK)) or shutil.which("cc") is None
        monkeypatch.setenv(compiled.ENV_SWITCH, "0")  # the torch ops' sampler: worth a worker
        assert prefetch_wanted("auto", PREFETCH_MIN_STEPS, TASK)
        assert not prefetch_wanted("auto", PREFETCH_MIN_STEPS - 1, TASK)
        # the urn sampler of a multi-parent task is cheap beside its step: it stays in process
        assert not prefetch_wanted("auto", 10**9, InContextTask(CausalGraph.two_parent(8), 3, 0.1))
    finally:
        torch.set_num_threads(1)
