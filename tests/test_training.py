"""Tests of training: recipes, the trainer's metrics, exact resume, damaged checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from interp_causal.models import paper_model
from interp_causal.tasks import CausalGraph, InContextTask
from interp_causal.training import (
    CheckpointError,
    Recipe,
    Trainer,
    last_position_loss,
    load_checkpoint,
    make_config,
    resume_run,
    start_run,
)

METRIC_KEYS = ("step", "train_loss", "test_loss", "bayes_loss")


def small_task() -> InContextTask:
    return InContextTask(CausalGraph.chain(8), vocab_size=4, alpha=0.1)


def small_recipe(**kw) -> Recipe:
    base = dict(optimizer="adamw", lr=2e-2, weight_decay=1e-3, schedule="cosine", steps=200, batch_size=64,
                init="zero", pool_size=None, eval_every=20, test_size=256)  # fmt: skip
    base.update(kw)
    return Recipe(**base)


def rows_of(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def metric_view(rows: list[dict]) -> list[tuple]:
    return [tuple(r[k] for k in METRIC_KEYS) for r in rows]


# ---------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------
def test_cosine_schedule_formula():
    r = small_recipe(steps=100)
    for step in (0, 10, 25, 50, 73, 100, 150):
        want = 0.5 * (1 + math.cos(math.pi * min(step, 100) / 100))
        assert abs(r.lr_factor(step) - want) < 1e-12
    assert small_recipe(schedule="constant").lr_factor(57) == 1.0


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(optimizer="adam"), "optimizer"),
        (dict(schedule="linear"), "schedule"),
        (dict(lr=0), "lr"),
        (dict(weight_decay=-1), "weight_decay"),
        (dict(steps=0), "steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(pool_size=10), "pool_size"),
    ],
)
def test_recipe_refuses_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        small_recipe(**kw)


def test_last_position_loss_formula():
    task = small_task()
    model = paper_model(task)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.unembed.W_U.copy_(torch.randn(model.W_U.shape, generator=g))
    batch = task.sample(16, g)
    with torch.no_grad():
        logits = model(batch.tokens, return_type="logits")
        want = -(batch.target * torch.log_softmax(logits[:, -1], -1)).sum(-1).mean()
        got = last_position_loss(model, batch)
    assert torch.allclose(got, want, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------
def test_trainer_refuses_a_mismatched_model():
    task = small_task()
    model = paper_model(task)
    with pytest.raises(ValueError, match="n_ctx"):
        Trainer(model, InContextTask(CausalGraph.chain(9), vocab_size=4), small_recipe())
    with pytest.raises(ValueError, match="d_vocab"):
        Trainer(model, InContextTask(CausalGraph.chain(8), vocab_size=5), small_recipe())
    with pytest.raises(TypeError, match="recipe"):
        Trainer(model, task, {"steps": 10})


def test_trainer_metrics_and_learning(tmp_path):
    task = small_task()
    config = make_config(task, "paper", small_recipe(steps=60, eval_every=20), seed=0)
    trainer = start_run(config, tmp_path / "run", progress=False)
    history = trainer.fit()
    rows = rows_of(tmp_path / "run")
    assert [r["step"] for r in rows] == [0, 20, 40, 60]
    assert rows == history
    # zero init: the model's output is uniform, so the first test loss is log S exactly
    assert rows[0]["train_loss"] is None
    assert abs(rows[0]["test_loss"] - math.log(4)) < 1e-5
    for r in rows[1:]:
        assert set(METRIC_KEYS) <= set(r)
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["test_loss"])
    assert len({r["bayes_loss"] for r in rows}) == 1  # one held-out set
    assert rows[-1]["test_loss"] < rows[0]["test_loss"] - 0.05  # it learns something
    assert trainer.step == 60


def test_reference_bayes_loss_is_the_brute_force_count_on_the_test_set():
    task = small_task()
    recipe = small_recipe(test_size=200)
    trainer = Trainer(paper_model(task), task, recipe, seed=7)
    tokens, target = trainer.test_batch.tokens.tolist(), trainer.test_batch.target.double()
    T, S, a = 8, 4, 0.1
    total = 0.0
    for seq, y in zip(tokens, target):
        counts = [0.0] * S
        for i in range(1, T - 1):  # chain positions with a parent; T - 1 is the query
            if seq[i - 1] == seq[T - 1]:
                counts[seq[i]] += 1
        f = [(c + a) / (sum(counts) + S * a) for c in counts]
        total += -sum(float(y[s]) * math.log(f[s]) for s in range(S))
    assert abs(trainer.reference_losses["bayes"] - total / len(tokens)) < 1e-5
    assert abs(trainer.reference_losses["uniform"] - math.log(S)) < 1e-5


@pytest.mark.parametrize("pool_size, until", [(None, 100), (192, 100), (192, 90)])
def test_resume_is_exact(tmp_path, pool_size, until):
    task = small_task()
    config = make_config(task, "paper", small_recipe(pool_size=pool_size), seed=5)

    straight = start_run(config, tmp_path / "a", progress=False)
    straight.fit()
    final_a = {k: v.clone() for k, v in straight.model.state_dict().items()}
    rows_a = rows_of(tmp_path / "a")
    assert rows_a[-1]["step"] == 200

    first = start_run(config, tmp_path / "b", progress=False)
    first.fit(until=until)
    assert first.step == until
    del first
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == until

    # a crash after a metrics row was written but before its checkpoint: rows past the
    # checkpoint (and a torn last line) must be dropped on resume
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": until + 20, "train_loss": 9.0, "test_loss": 9.0, "bayes_loss": 9.0}) + "\n")
        f.write('{"step": 1')
    resumed = resume_run(tmp_path / "b", progress=False)
    assert resumed.step == until
    kept = rows_of(tmp_path / "b")
    assert max(r["step"] for r in kept) <= until
    assert all(r["test_loss"] != 9.0 for r in kept)

    resumed.fit()
    assert resumed.step == 200
    final_b = resumed.model.state_dict()
    assert final_a.keys() == final_b.keys()
    for k in final_a:
        assert torch.equal(final_a[k], final_b[k]), f"{k} differs after resume"
    rows_b = rows_of(tmp_path / "b")
    assert metric_view(rows_b) == metric_view(rows_a)


@pytest.mark.parametrize("batch_size, block", [(64, 256), (100, 256)])
def test_fresh_draws_come_in_blocks_of_whole_batches_each_used_once(monkeypatch, batch_size, block):
    # pool_size=None: the trainer draws FRESH_BLOCK sequences (rounded down to whole batches) at a
    # time from its data stream and hands each out once; the reference is the task's own sampler
    # called on a generator seeded as the trainer's
    from interp_causal.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "FRESH_BLOCK", block)
    task = small_task()
    trainer = Trainer(paper_model(task), task, small_recipe(batch_size=batch_size), seed=3)
    per_block = block // batch_size
    assert trainer.pool_size == per_block * batch_size
    rng = torch.Generator().manual_seed(3)
    want = [task.sample(per_block * batch_size, rng) for _ in range(3)]
    for b in range(3 * per_block):
        got = trainer.next_batch()
        ref = want[b // per_block][(b % per_block) * batch_size : (b % per_block + 1) * batch_size]
        assert torch.equal(got.tokens, ref.tokens) and torch.equal(got.target, ref.target), f"batch {b}"


def test_resume_with_more_steps_follows_the_new_schedule(tmp_path):
    # Invariant of a straight run: before the step after `step`, the optimiser's lr is
    # lr * lr_factor(step). Raising the total on resume changes the schedule; the first resumed
    # step must use the new schedule's lr, not the old one's (0 at the end of a cosine run).
    lr = 0.1
    config = make_config(small_task(), "paper", small_recipe(steps=20, eval_every=10, lr=lr), seed=0)
    start_run(config, tmp_path / "r", progress=False).fit()
    resumed = resume_run(tmp_path / "r", steps=40, progress=False)
    assert resumed.step == 20 and resumed.recipe.steps == 40
    want = lr * 0.5 * (1 + math.cos(math.pi * 20 / 40))  # 0.05
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(want, rel=1e-9)


def test_resume_refuses_fewer_steps_than_done(tmp_path):
    # "continue the run up to --steps in total": a total below the steps already done cannot be
    # honoured; it must be refused (naming steps), not written into config.json silently.
    config = make_config(small_task(), "paper", small_recipe(steps=20, eval_every=10), seed=0)
    start_run(config, tmp_path / "r", progress=False).fit()
    with pytest.raises(ValueError, match="steps"):
        resume_run(tmp_path / "r", steps=10, progress=False)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["recipe"]["steps"] == 20


def test_different_seeds_give_different_runs(tmp_path):
    task = small_task()
    out = []
    for seed in (1, 2):
        config = make_config(task, "paper", small_recipe(steps=20, eval_every=10), seed=seed)
        t = start_run(config, tmp_path / f"s{seed}", progress=False)
        t.fit()
        out.append(metric_view(rows_of(tmp_path / f"s{seed}")))
    assert out[0] != out[1]


def test_start_run_refuses_an_existing_run(tmp_path):
    config = make_config(small_task(), "paper", small_recipe(steps=10, eval_every=10), seed=0)
    start_run(config, tmp_path / "r", progress=False).fit()
    with pytest.raises(FileExistsError, match="out"):
        start_run(config, tmp_path / "r", progress=False)


def test_truncated_checkpoint_is_refused(tmp_path):
    config = make_config(small_task(), "paper", small_recipe(steps=20, eval_every=10), seed=0)
    run = tmp_path / "r"
    start_run(config, run, progress=False).fit(until=10)
    ckpt = run / "checkpoint.pt"
    assert load_checkpoint(ckpt)["step"] == 10
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|damaged"):
        load_checkpoint(ckpt)
    with pytest.raises(ValueError, match="truncated|damaged"):
        resume_run(run, progress=False)
    assert issubclass(CheckpointError, ValueError)


def test_foreign_or_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no file"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an interp-causal checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
