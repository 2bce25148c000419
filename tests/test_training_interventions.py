"""Interventions during training: ablated and clamped heads, frozen parameters, stage-wise training.

References are independent of the code under test: the paper model's own weights written out
(``beta_0 I`` in the reduced model's second layer, a row softmax of the position block), state
dicts compared bit for bit with an unbroken run, and, for the structured path's interventions,
TransformerLens's own forward with the hooks of ``probes.interventions`` attached (checked against
a hand-written forward in tests/test_interventions.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from interp_causal.cli import main
from interp_causal.models import paper_model
from interp_causal.tasks import CausalGraph, InContextTask
from interp_causal.training import (
    Interventions,
    Recipe,
    Trainer,
    get_recipe,
    load_checkpoint,
    load_run,
    make_config,
    resume_run,
    start_run,
)


def small_task(T: int = 8) -> InContextTask:
    return InContextTask(CausalGraph.chain(T), vocab_size=4, alpha=0.1)


def two_parent_task() -> InContextTask:
    return InContextTask(CausalGraph.two_parent(10), vocab_size=3, alpha=0.1)


def small_recipe(**kw) -> Recipe:
    base = dict(optimizer="adamw", lr=2e-2, weight_decay=1e-3, schedule="cosine", steps=60, batch_size=32,
                init="normal", eval_every=20, test_size=128)
    base.update(kw)
    return Recipe(**base)


def rows_of(run: Path) -> list[tuple]:
    keys = ("step", "train_loss", "test_loss", "bayes_loss")
    return [tuple(json.loads(line)[k] for k in keys) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---- kill and resume -----------------------------------------------------------------------------
@pytest.mark.parametrize("forward", ["auto", "hooked"])
def test_a_run_with_clamp_and_ablate_killed_and_resumed_is_bit_identical(tmp_path, forward):
    task = two_parent_task()
    spec = {"clamp": ["0.0=parents:0", "1.0=graph_induction"], "ablate": ["0.1"], "freeze": ["unembed.W_U@0:10"]}
    config = make_config(task, "paper", small_recipe(), 3, {"heads": [2, 1]}, forward=forward, interventions=spec)

    straight = start_run(config, tmp_path / "a", progress=False)
    straight.fit()
    want = {k: v.clone() for k, v in straight.model.state_dict().items()}

    first = start_run(config, tmp_path / "b", progress=False)
    first.fit(until=25)  # killed between two checkpoints' evaluations
    del first
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 25
    assert json.loads((tmp_path / "b" / "config.json").read_text())["interventions"] == spec
    resumed = resume_run(tmp_path / "b", progress=False)
    resumed.fit()
    got = resumed.model.state_dict()
    for k in want:
        assert torch.equal(want[k], got[k]), f"{k} differs after resume"
    assert rows_of(tmp_path / "b") == rows_of(tmp_path / "a")
    # the interventions were in force: a clamped and an ablated model differ from the plain one
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["interventions"] == ["ablate L0H1 (zero)", "clamp L0H0 to parents:0",
                                        "clamp L1H0 to graph_induction", "freeze unembed.W_U in steps 0..9"]


def test_a_reloaded_run_keeps_its_interventions(tmp_path):
    task = small_task()
    config = make_config(task, "paper", small_recipe(steps=20), 0, interventions={"ablate": ["1.0"]})
    start_run(config, tmp_path / "r", progress=False).fit()
    _, model, _, _ = load_run(tmp_path / "r")
    import gc

    gc.collect()  # the handle load_run drops must not take the hooks with it
    tokens = task.sample(8, torch.Generator().manual_seed(0)).tokens
    from probes import run_with_sites

    _, acts = run_with_sites(model, tokens, ["blocks.1.attn.hook_z"])
    assert acts["blocks.1.attn.hook_z"].abs().max() == 0


@pytest.mark.needs_hooked
@pytest.mark.parametrize("spec", [
    {"clamp": ["0.0=parents:1", "1.0=graph_induction"], "ablate": ["0.1"]},
    {"clamp": ["0.1=previous"], "ablate": ["1.0"]},
    {"clamp": ["1.0=induction"]},
])
def test_the_structured_path_runs_interventions_as_the_hooked_model_does(spec):
    from interp_causal.models import structured

    task = two_parent_task()
    model = paper_model(task, heads=[2, 1], init="normal")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q.copy_(0.7 * torch.randn(block.attn.W_Q.shape, generator=g))
        model.unembed.W_U.copy_(torch.randn(model.unembed.W_U.shape, generator=g))
    tokens = task.sample(16, g).tokens
    clean = model(tokens)[:, -1]
    interventions = Interventions.from_dict(spec)
    attached = interventions.attach(model, task)
    try:
        want = model(tokens)[:, -1]
        got = structured.last_logits(model, tokens, interventions.structured_patterns(model, task)(tokens))
    finally:
        attached.remove()
    assert (want - clean).abs().max() > 1e-2  # the interventions change the output
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# ---- stage-wise ----------------------------------------------------------------------------------
def test_stagewise_trains_the_layers_of_algorithm_1_in_turn():
    task = InContextTask(CausalGraph.chain(20), vocab_size=10, alpha=0.1)
    recipe = get_recipe("stagewise").with_overrides(test_size=512)
    S, T, split = 10, 20, recipe.stage_split
    model = paper_model(task, reduced=True, beta0=0.1)
    d0 = S + T  # a position's embedding: [onehot(token); onehot(position)]
    a2 = torch.zeros_like(model.blocks[1].attn.W_Q)
    a2[0, :S, d0 : d0 + S] = 0.1 * torch.eye(S)  # A(2) = beta_0 I: query token x copied token

    seen: dict = {"stage1": 0, "stage2": 0}

    class Watch:
        def on_step_end(self, trainer):
            A1, A2 = model.blocks[0].attn.W_Q, model.blocks[1].attn.W_Q
            if trainer.step <= split:
                assert torch.equal(A2, a2), f"A(2) moved at step {trainer.step}"
                seen["stage1"] += 1
                if trainer.step == split:
                    seen["A1"] = A1.detach().clone()
            else:
                assert torch.equal(A1, seen["A1"]), f"A(1) moved at step {trainer.step}"
                seen["stage2"] += 1

    trainer = Trainer(model, task, recipe, None, 0, [Watch()], progress=False)
    trainer.fit()
    assert seen["stage1"] == split and seen["stage2"] == recipe.steps - split
    assert not torch.equal(model.blocks[1].attn.W_Q, a2)  # stage 2 did train A(2)
    # the end of stage 1: the row argmax of softmax(A(1)) (position block, causal) on the parent
    block = seen["A1"][0, S : S + T, S : S + T]
    rows = block.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    assert [int(rows[i].argmax()) for i in range(1, T)] == list(range(T - 1))
    stages = [r["stage"] for r in trainer.history]
    assert stages[0] == 1 and stages[-1] == 2
    assert next(r for r in trainer.history if r["step"] == split)["stage"] == 1


def test_stagewise_from_the_command_line_marks_the_boundary(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["train", "--recipe", "stagewise", "--steps", "40", "--eval-every", "15", "--vocab", "4",
                 "--seq-len", "8", "--quiet", "--no-probes", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["preset"] == "paper-reduced" and config["recipe"]["stage_split"] == 20  # 200 of 400
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 15, 20, 30, 40]  # an evaluation closes stage 1
    assert [r["stage"] for r in rows] == [1, 1, 1, 2, 2]
    assert "stage-wise      stage 2 from step 20" in capsys.readouterr().out
    assert main(["train", "--recipe", "stagewise", "--steps", "40", "--stage-split", "40", "--quiet",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "stage_split" in capsys.readouterr().err


# ---- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, named", [
    ({"ablate": ["2.0"]}, "head|layer"),  # the paper model has two layers
    ({"ablate": ["0.1"]}, "head"),  # and one head in each
    ({"clamp": ["0.0=parent"]}, "pattern"),
    ({"clamp": ["0.0"]}, "clamp"),
    ({"ablate": ["x"]}, "ablate"),
    ({"ablate": ["0.0"], "clamp": ["0.0=parents"]}, "more than one intervention"),
    ({"freeze": ["blocks.0.attn.W_K"]}, "freeze"),  # fixed in the paper model: not trainable
    ({"freeze": ["blocks.0.attn.W_Q@9:3"]}, "freeze"),
    ({"sculpt": ["0.0"]}, "interventions"),
])
def test_bad_interventions_are_refused_before_anything_is_written(tmp_path, spec, named):
    config_task = small_task()
    with pytest.raises(ValueError, match=named):
        config = make_config(config_task, "paper", small_recipe(), 0, interventions=spec)
        start_run(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("pattern, named", [
    (torch.full((8, 8), 1 / 8), "pattern"),  # not causal
    (torch.eye(7), "pattern"),  # wrong shape
    (0.5 * torch.eye(8), "pattern"),  # rows do not sum to 1
])
def test_bad_clamp_tensors_are_refused_before_the_first_forward(pattern, named):
    from probes import Clamp, attach

    task = small_task()
    model = paper_model(task)
    with pytest.raises(ValueError, match=named):
        clamp = Clamp(0, 0, pattern)
        attached = attach(model, [clamp])
        try:
            model(task.sample(2, torch.Generator().manual_seed(0)).tokens)
        finally:
            attached.remove()


def test_structured_forward_is_refused_where_it_cannot_run_the_interventions(tmp_path):
    task = small_task()
    config = make_config(task, "paper", small_recipe(), 0, {"heads": [1, 1, 1]}, forward="structured",
                         interventions={"ablate": ["1.0"]})
    with pytest.raises(ValueError, match="forward"):
        start_run(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_cli_stores_the_interventions_shows_them_and_refuses_them_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--vocab", "4", "--seq-len", "8", "--steps", "20", "--batch-size", "32", "--eval-every", "10",
            "--quiet", "--out", str(out), "--clamp", "0.0=parents", "--ablate", "1.0", "--freeze", "unembed.W_U@0:5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "intervention    clamp L0H0 to parents" in printed and "intervention    ablate L1H0 (zero)" in printed
    assert "imposed (clamped to parents)" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["interventions"] == {"ablate": ["1.0"], "clamp": ["0.0=parents"], "freeze": ["unembed.W_U@0:5"]}
    assert main(["train", "--resume", "--out", str(out), "--steps", "30", "--ablate", "0.0", "--quiet"]) == 2
    assert "--ablate" in capsys.readouterr().err
    assert main(["train", "--vocab", "4", "--seq-len", "8", "--steps", "20", "--quiet", "--out",
                 str(tmp_path / "bad"), "--clamp", "0.3=parents"]) == 2
    assert "head" in capsys.readouterr().err and not (tmp_path / "bad").exists()
