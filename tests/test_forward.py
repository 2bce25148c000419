"""The trainer's forward is chosen explicitly, and a paper model is recognised from its weights."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import HAS_HOOKED

from interp_causal.models import is_paper_model, paper_layout, paper_model, standard_model, structured
from interp_causal.tasks import CausalGraph, InContextTask
from interp_causal.training import Recipe, Trainer, make_config, resume_run, start_run

TASK = InContextTask(CausalGraph.chain(8), vocab_size=4)
RECIPE = Recipe("adamw", 5e-2, 1e-3, "cosine", steps=6, batch_size=32, init="normal", eval_every=3, test_size=32)


@pytest.mark.parametrize("heads", [(1, 1), (2, 1), (1, 2, 1)])
def test_a_paper_model_is_recognised_from_its_weights_on_any_backend_and_after_a_copy(heads):
    model = paper_model(TASK, heads=heads, init="normal", seed=3)
    assert paper_layout(model).heads == heads
    twin = copy.deepcopy(model)
    assert paper_layout(twin).heads == heads
    with torch.no_grad():
        twin.blocks[0].attn.W_V[0, 0, 0] = 0.5  # no longer copies its input
    assert not is_paper_model(twin) and is_paper_model(model)


def test_standard_models_are_not_paper_models():
    assert not is_paper_model(standard_model(TASK))
    assert not is_paper_model(torch.nn.Linear(2, 2))


def test_unknown_forward_is_refused_before_training():
    with pytest.raises(ValueError, match=r"forward: expected one of \('auto', 'structured', 'hooked'\), got 'fast'"):
        Trainer(paper_model(TASK), TASK, RECIPE, forward="fast")
    with pytest.raises(ValueError, match="forward: expected one of"):
        make_config(TASK, "paper", RECIPE, 0, forward="dense")


def test_structured_forward_refuses_a_model_it_cannot_train():
    with pytest.raises(ValueError, match="forward: 'structured' cannot train this model"):
        Trainer(standard_model(TASK), TASK, RECIPE, forward="structured")


@pytest.mark.needs_hooked
def test_auto_takes_the_structured_path_exactly_when_it_applies(monkeypatch):
    calls = []
    real = structured.last_logits
    monkeypatch.setattr(structured, "last_logits", lambda m, x: calls.append(1) or real(m, x))
    batch = TASK.sample(16, torch.Generator().manual_seed(0))
    from interp_causal.training import last_position_loss

    model = paper_model(TASK)
    for forward, want in (("auto", 1), ("structured", 1), ("hooked", 0)):
        calls.clear()
        last_position_loss(model, batch, forward)
        assert len(calls) == want, forward
    calls.clear()
    last_position_loss(standard_model(TASK), batch, "auto")
    assert calls == []


@pytest.mark.needs_hooked
def test_hooked_and_structured_forwards_train_to_the_same_weights():
    finals = []
    for forward in ("structured", "hooked"):
        model = paper_model(TASK, init="normal", seed=1)
        Trainer(model, TASK, RECIPE, seed=4, progress=False, forward=forward).fit()
        finals.append({n: p.detach().clone() for n, p in model.named_parameters()})
    for name in finals[0]:
        assert torch.allclose(finals[0][name], finals[1][name], atol=1e-4), name


def test_the_forward_is_part_of_the_config_and_survives_a_resume(tmp_path):
    forward = "hooked" if HAS_HOOKED else "auto"
    config = make_config(TASK, "paper", RECIPE, 0, forward=forward)
    trainer = start_run(config, tmp_path / "run", progress=False)
    assert trainer.forward == forward
    trainer.fit(until=3)
    assert resume_run(tmp_path / "run", progress=False).forward == forward
