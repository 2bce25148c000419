"""ProbeMonitor: probing a plain PyTorch loop and the Hugging Face Trainer, and formation for any probe."""

from __future__ import annotations

import json

import pytest
import torch

from interp_causal.models import paper_model
from interp_causal.tasks import CausalGraph, InContextTask
from probes import GraphInductionProbe, PreviousTokenAttention, ProbeMonitor, ProbeSuite, every, track


def test_a_plain_loop_records_when_an_induction_head_forms(tmp_path):
    task = InContextTask(CausalGraph.chain(20), vocab_size=10, alpha=0.1)
    model = paper_model(task)
    probe_tokens = task.sample(128, torch.Generator().manual_seed(1)).tokens
    suite = ProbeSuite([GraphInductionProbe(task.graph.parent_lists())])
    monitor = ProbeMonitor(suite, probe_tokens, schedule=every(10), run_dir=tmp_path)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    for step in range(201):  # the user's own loop
        assert (monitor(model, step) is not None) == (step % 10 == 0)
        batch = task.sample(256, gen)
        loss = -(batch.target * model(batch.tokens)[:, -1].log_softmax(-1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    rows = [json.loads(line) for line in (tmp_path / "probes.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == list(range(0, 201, 10))
    series = sorted((r["step"], r["value"]) for r in rows
                    if r["metric"] == "context_mass" and r["layer"] == 1 and r["head"] == 0)
    assert series[0][1] < 0.2 and series[-1][1] > 0.5  # it really formed
    formed = monitor.formation("graph_induction", "context_mass", threshold=0.5)
    assert (formed["layer"], formed["head"]) == (1, 0)
    first_above = next(s for s, v in series if v >= 0.5)
    assert formed["threshold_step"] == first_above
    assert track(tmp_path / "probes.jsonl", "graph_induction", "context_mass", 0.5) == formed


def test_formation_of_a_falling_score_and_of_a_given_head():
    rows = [{"probe": "p", "metric": "kl", "layer": 0, "head": h, "value": v, "step": s}
            for s, vals in ((0, (2.0, 2.0)), (10, (1.5, 0.4)), (20, (1.0, 0.1))) for h, v in enumerate(vals)]
    falling = track(rows, "p", "kl", threshold=0.5, increasing=False)
    assert (falling["head"], falling["threshold_step"], falling["value"]) == (1, 10, 0.1)
    head0 = track(rows, "p", "kl", threshold=1.2, head=0, increasing=False)
    assert (head0["head"], head0["threshold_step"]) == (0, 20)
    assert track(rows, "p", "other", 0.5) is None


def test_bad_monitor_arguments_are_refused():
    suite = ProbeSuite([PreviousTokenAttention()])
    tokens = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(TypeError, match="suite: expected a ProbeSuite"):
        ProbeMonitor([PreviousTokenAttention()], tokens)
    with pytest.raises(ValueError, match="threads: expected None or an int >= 1"):
        ProbeMonitor(suite, tokens, threads=0)
    with pytest.raises(ValueError, match="step: expected an int >= 0, got -1"):
        ProbeMonitor(suite, tokens)(torch.nn.Linear(1, 1), -1)


def test_the_hugging_face_trainer_calls_the_monitor(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from probes.testing import planted_gpt2

    model = planted_gpt2(vocab=16, n_ctx=32)
    for p in model.parameters():
        p.data.add_(0.01 * torch.randn_like(p))  # something to train
    data = [{"input_ids": torch.randint(0, 16, (32,), generator=torch.Generator().manual_seed(i))} for i in range(16)]
    for row in data:
        row["labels"] = row["input_ids"]
    monitor = ProbeMonitor(ProbeSuite([PreviousTokenAttention()]), torch.stack([d["input_ids"] for d in data[:4]]),
                           schedule=every(2), run_dir=tmp_path)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=5, per_device_train_batch_size=4,
                                          learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
                                          use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[monitor.hf_callback()])
    trainer.train()
    steps = sorted({r["step"] for r in monitor.rows})
    assert steps == [0, 2, 4, 5]
    formed = monitor.formation("previous_token", "score", threshold=0.5)
    assert (formed["layer"], formed["head"]) == (0, 1) and formed["threshold_step"] == 0


def test_summarize_takes_any_mechanism_and_threshold():
    from probes import summarize

    rows = [{"probe": "induction", "metric": "repeat", "layer": l, "head": 0, "value": v, "step": s}
            for s, vals in ((0, (0.0, 0.1)), (5, (0.1, 0.3)), (9, (0.1, 0.7))) for l, v in enumerate(vals)]
    out = summarize(rows, thresholds={"stripe": 0.25}, mechanisms={"stripe": [("induction", "repeat")]})
    assert set(out) == {"final_step", "stripe"}
    assert (out["stripe"]["layer"], out["stripe"]["threshold_step"], out["stripe"]["threshold"]) == (1, 5, 0.25)
