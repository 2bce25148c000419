"""Training-time probing: schedules, the callback with a stand-in trainer, formation steps, summaries."""

import json

import pytest
import torch

from probes import (
    LinearCopyingProbe,
    ForwardProbe,
    ProbeCallback,
    ProbeSuite,
    Record,
    at,
    default_suite,
    every,
    formation_steps,
    log_spaced,
    read_jsonl,
    summarize,
)
from probes.schedule import as_schedule
from probes_helpers import PLANTED, plain_model, planted_weights

T = 24
PARENTS = [[]] + [[i - 1] for i in range(1, T - 1)] + [[]]  # the chain task, query at the last position


def test_schedules():
    assert every(50).steps(200) == [0, 50, 100, 150, 200]
    assert every(5, start=20, stop=40).steps(100) == [20, 25, 30, 35]
    want = sorted({round(10 ** (k / 10)) for k in range(0, 31)} - {0})
    assert log_spaced(10).steps(1000) == [s for s in want if s <= 1000]
    assert log_spaced(1).steps(1000) == [1, 10, 100, 1000]
    assert at([3, 7]).steps(10) == [3, 7]
    union = every(100) | at([42]) | every(10, start=300, stop=330)
    assert union.steps(400) == [0, 42, 100, 200, 300, 310, 320, 400]
    assert as_schedule(25).steps(50) == [0, 25, 50] and as_schedule([1, 2]).steps(5) == [1, 2]
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        every(0)
    with pytest.raises(TypeError, match="schedule"):
        as_schedule("often")


def test_formation_steps():
    steps = [0, 10, 20, 30, 40, 60, 100]
    values = [0.0, 0.05, 0.1, 0.6, 0.9, 0.95, 0.97]
    assert formation_steps(steps, values, threshold=0.5) == {"threshold_step": 30, "steepest_step": 30}
    # Per step: 0.5 over 10 steps beats 0.3 over 10 only if spacing is accounted for.
    assert formation_steps([0, 100, 110], [0.0, 0.6, 0.9], 0.5) == {"threshold_step": 100, "steepest_step": 110}
    assert formation_steps(steps, values, threshold=0.99) == {"threshold_step": None, "steepest_step": 30}
    assert formation_steps([0, 1, 2], [3.0, 2.0, 0.5], threshold=1.0, increasing=False) == {"threshold_step": 2, "steepest_step": 2}
    assert formation_steps([5, 0], [1.0, float("nan")], 0.5) == {"threshold_step": 5, "steepest_step": None}
    assert formation_steps([], [], 0.5) == {"threshold_step": None, "steepest_step": None}
    with pytest.raises(ValueError, match="same length"):
        formation_steps([1], [], 0.5)


class FakeTrainer:
    """What ProbeCallback reads: step, model, run_dir. The mechanism grows with the step."""

    def __init__(self, run_dir, total):
        self.step, self.run_dir, self.total = 0, run_dir, total
        self.model, self.site_map = plain_model(PLANTED, self._weights())
        self.model.train()

    def _weights(self):
        # Below about a third of the run the heads attend nowhere in particular; then they sharpen.
        strength = 30.0 * max(0.0, self.step / self.total - 0.3)
        return planted_weights(strength=strength)

    def advance(self):
        self.step += 1
        with torch.no_grad():
            for k, v in self._weights().items():
                self.model.w[k.replace(".", "__")].copy_(v)


def test_callback_probes_on_schedule_and_writes_jsonl(tmp_path):
    total = 40
    trainer = FakeTrainer(tmp_path, total)
    tokens = torch.randint(0, PLANTED.d_vocab, (32, T), generator=torch.Generator().manual_seed(0))
    callback = ProbeCallback(default_suite(PARENTS), tokens, schedule=every(15) | at([7]), site_map=trainer.site_map)
    rng_before = torch.random.get_rng_state()
    callback.on_train_begin(trainer)
    for _ in range(total - 1):  # the run stops at step 39, off the schedule
        trainer.advance()
        callback.on_step_end(trainer)
    callback.on_train_end(trainer)
    callback.on_train_end(trainer)  # a second call at the same step writes nothing
    assert torch.equal(torch.random.get_rng_state(), rng_before), "probing consumed the global RNG"
    assert trainer.model.training and all(p.grad is None for p in trainer.model.parameters())

    lines = (tmp_path / "probes.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert sorted({r["step"] for r in rows}) == [0, 7, 15, 30, 39]
    assert rows == read_jsonl(tmp_path / "probes.jsonl") == callback.rows
    assert {r["probe"] for r in rows} == {"parent_attention", "previous_token", "graph_induction", "linear_copying_ridge"}

    summary = summarize(tmp_path / "probes.jsonl")
    assert summary["final_step"] == 39
    pa, cp, ind = summary["parent_attention"], summary["copying"], summary["induction"]
    assert (pa["layer"], pa["head"]) == (0, 1) and pa["value"] > 0.9
    assert (cp["layer"], cp["head"]) == (0, None) and cp["value"] > 0.8
    assert (ind["layer"], ind["head"]) == (1, 0) and ind["value"] > 0.8
    # Strength is 0 up to step 12, then grows: the heads form between the probes at 7 and 30.
    for mech in (pa, cp, ind):
        assert mech["threshold_step"] in (15, 30) and mech["steepest_step"] in (15, 30), mech
    assert summarize(callback.rows) == summary


def test_callback_without_run_dir_keeps_rows_and_resumed_runs_skip_the_begin_probe():
    trainer = FakeTrainer(None, 10)
    tokens = torch.randint(0, PLANTED.d_vocab, (8, T), generator=torch.Generator().manual_seed(1))
    suite = ProbeSuite([LinearCopyingProbe(PARENTS, solver="ridge", layers=[0])])
    callback = ProbeCallback(suite, tokens, schedule=100, site_map=trainer.site_map)
    trainer.step = 5  # resumed
    callback.on_train_begin(trainer)
    assert callback.rows == []
    callback.on_train_end(trainer)
    assert {r["step"] for r in callback.rows} == {5}
    with pytest.raises(TypeError, match="suite: expected a ProbeSuite"):
        ProbeCallback([suite], tokens)


class ThreadSpy(ForwardProbe):
    name = "threads"

    def compute(self, acts, batch):
        return [Record(self.name, None, None, "threads", torch.get_num_threads())]


def test_callback_probes_with_one_thread_and_restores_the_setting():
    trainer = FakeTrainer(None, 10)
    tokens = torch.zeros(2, T, dtype=torch.long)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        callback = ProbeCallback(ProbeSuite([ThreadSpy()]), tokens, site_map=trainer.site_map)
        callback.on_train_end(trainer)
        assert callback.rows[0]["value"] == 1 and torch.get_num_threads() == 2
        callback = ProbeCallback(ProbeSuite([ThreadSpy()]), tokens, site_map=trainer.site_map, threads=None)
        callback.on_train_end(trainer)
        assert callback.rows[0]["value"] == 2
    finally:
        torch.set_num_threads(before)


def test_summarize_reports_best_head_per_parent_slot():
    rows = []
    for step, scale in ((0, 0.1), (10, 0.9)):
        for head in range(2):
            rows += [
                {"probe": "parent_attention", "layer": 0, "head": head, "metric": "mass", "value": scale, "step": step},
                {"probe": "parent_attention", "layer": 0, "head": head, "metric": "mass_parent0",
                 "value": scale * (head == 0), "step": step},
                {"probe": "parent_attention", "layer": 0, "head": head, "metric": "mass_parent1",
                 "value": scale * (head == 1), "step": step},
            ]
    summary = summarize(rows)
    assert summary["parent_attention_parent0"]["head"] == 0 and summary["parent_attention_parent1"]["head"] == 1
    assert summary["parent_attention_parent1"]["threshold_step"] == 10
    assert summary["copying"] is None and summary["induction"] is None
