"""The run directory: one torn-line rule, one summary writer and schema, a directory its owner creates."""

from __future__ import annotations

import json

import pytest

from interp_causal.models import paper_model
from interp_causal.probing import default_callback
from interp_causal.tasks import CausalGraph, InContextTask
from interp_causal.training import Recipe, RunDir, Trainer, make_config, resume_run, start_run, train_run
from interp_causal.training.run_dir import SUMMARY_KEYS

TASK = InContextTask(CausalGraph.chain(8), vocab_size=4)
RECIPE = Recipe("adamw", 5e-2, 0.0, "cosine", steps=20, batch_size=32, eval_every=5, test_size=64)


def test_a_torn_last_line_is_skipped_and_a_damaged_one_is_an_error(tmp_path):
    run = RunDir(tmp_path)
    run.append_metrics({"step": 0, "test_loss": 1.0})
    with open(run.metrics, "a") as f:
        f.write('{"step": 5, "test_lo')  # a crash mid-write
    assert run.read_metrics() == [{"step": 0, "test_loss": 1.0}]
    assert run.truncate_logs(10) == [{"step": 0, "test_loss": 1.0}]
    assert run.metrics.read_text() == '{"step": 0, "test_loss": 1.0}\n'  # the torn tail is gone
    with open(run.metrics, "a") as f:
        f.write('{"step": 5, "test_lo\n{"step": 10}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not JSON"):
        run.read_metrics()


def test_a_run_resumed_after_a_torn_line_appends_whole_lines(tmp_path):
    config = make_config(TASK, "paper", RECIPE, 0)
    start_run(config, tmp_path / "r", progress=False).fit(until=10)
    with open(tmp_path / "r" / "metrics.jsonl", "a") as f:
        f.write('{"step": 1')  # nothing to drop but the torn tail
    resume_run(tmp_path / "r", progress=False).fit()
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 5, 10, 15, 20]


def test_the_trainer_creates_its_run_directory_and_writes_one_summary(tmp_path):
    out = tmp_path / "a" / "b"
    trainer = Trainer(paper_model(TASK), TASK, RECIPE, run_dir=out, progress=False)
    assert out.is_dir()
    trainer.callbacks.append(default_callback(trainer))
    trainer.fit()
    summary = json.loads((out / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary) and summary["steps"] == 20
    assert summary["mechanisms"]["final_step"] == 20  # added by the probe callback
    assert summary["final_test_loss"] == trainer.history[-1]["test_loss"]
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(paper_model(TASK), TASK, RECIPE, run_dir=out, progress=False).fit()


def test_train_run_returns_what_it_wrote(tmp_path):
    summary = train_run(make_config(TASK, "paper", RECIPE, 0), tmp_path / "r", progress=False)
    assert summary == RunDir(tmp_path / "r").read_summary()
    assert "mechanisms" not in summary  # not probed
    with pytest.raises(ValueError, match=r"summary: missing keys \['wall_s'\]"):
        RunDir(tmp_path / "r").write_summary({k: 0 for k in SUMMARY_KEYS if k != "wall_s"})


def test_a_reproduction_keeps_its_own_file(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_reproduction() is None
    run.write_reproduction({"experiment": "x", "rows": []})
    assert run.read_reproduction() == {"experiment": "x", "rows": []}
    assert not run.summary.exists()


def test_default_probes_of_a_long_run_are_spread_over_it_at_the_process_threads():
    # 2^17 steps (the paper's chain): every ceil(2^17 / 1024) = 128 steps, not every 50; a run of
    # 4096 steps keeps every 50; probes run at the trainer's thread count (threads=None)
    long = Trainer(paper_model(TASK), TASK, RECIPE.with_overrides(steps=2**17), progress=False)
    callback = default_callback(long)
    assert all(s in callback.schedule for s in (128, 256, 1280, 2**17))
    assert not any(s in callback.schedule for s in (150, 200, 250, 1300))
    assert callback.threads is None
    short = default_callback(Trainer(paper_model(TASK), TASK, RECIPE.with_overrides(steps=4096), progress=False))
    assert all(s in short.schedule for s in (50, 100, 150, 4050)) and 128 not in short.schedule
