"""A standard HookedTransformer's last-position forward (the trainer's ``auto`` path for the
standard presets) equals the model's own forward at the last position, with the same gradients,
and gives way to it whenever the model has hooks or a config it does not cover."""

from __future__ import annotations

import pytest
import torch

from interp_causal.models import last_position, standard_model
from interp_causal.tasks import CausalGraph, InContextTask
from interp_causal.training import Recipe, Trainer, last_position_loss

pytestmark = pytest.mark.needs_hooked
TASK = InContextTask(CausalGraph.chain(12), vocab_size=6)


def _randomised(seed: int, **kwargs):
    model = standard_model(TASK, seed=seed, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # well away from TransformerLens's initialisation: biases, LN weights included
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("kwargs", [dict(), dict(mlp=True), dict(mlp=True, layernorm=True),
                                    dict(n_layers=3, n_heads=4, d_model=32), dict(n_layers=1, mlp=True, layernorm=True)],
                         ids=["attn-only", "mlp", "layernorm", "3x4", "one-layer"])
def test_the_last_position_and_its_gradients_equal_the_models_own_forward(kwargs):
    model = _randomised(3, **kwargs)
    assert last_position.supports(model)
    batch = TASK.sample(48, torch.Generator().manual_seed(5))
    results = []
    for ours in (False, True):
        model.zero_grad(set_to_none=True)
        logits = last_position.last_logits(model, batch.tokens) if ours else model(batch.tokens)[:, -1]
        (-(batch.target * logits.log_softmax(-1)).sum(-1).mean()).backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (want, want_grads), (got, got_grads) = results
    scale = want.abs().max()
    assert (got - want).abs().max() <= 1e-5 * max(1.0, float(scale))
    for name, g in want_grads.items():
        assert (got_grads[name] - g).abs().max() <= 1e-5 * max(1.0, float(g.abs().max())), name
    assert want_grads["blocks.0.attn.W_Q"].abs().max() > 1e-4  # gradients reach the first layer


def test_auto_takes_it_exactly_when_it_applies(monkeypatch):
    calls = []
    real = last_position.last_logits
    monkeypatch.setattr(last_position, "last_logits", lambda m, x: calls.append(1) or real(m, x))
    batch = TASK.sample(8, torch.Generator().manual_seed(0))
    model = standard_model(TASK, mlp=True)
    for forward, want in (("auto", 1), ("hooked", 0)):
        calls.clear()
        last_position_loss(model, batch, forward)
        assert len(calls) == want, forward
    rotary = standard_model(TASK, positional="rotary")
    assert "not a plain" in last_position.unsupported_reason(rotary)
    model.blocks[0].hook_resid_pre.add_hook(lambda t, hook: None)
    assert "hooks" in last_position.unsupported_reason(model)
    calls.clear()
    last_position_loss(model, batch, "auto")
    assert calls == []


def test_training_through_it_ends_where_the_hooked_forward_ends():
    recipe = Recipe("adamw", 1e-2, 2e-4, "cosine", steps=6, batch_size=64, eval_every=3, test_size=64)
    finals, losses = [], []
    for forward in ("auto", "hooked"):
        model = standard_model(TASK, mlp=True, layernorm=True, seed=2)
        trainer = Trainer(model, TASK, recipe, seed=4, progress=False, forward=forward)
        losses.append([r["test_loss"] for r in trainer.fit()])
        finals.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    for name in finals[0]:
        # b_K adds q . b_K to every score of a row: the softmax never sees it, its true gradient is
        # 0, and AdamW turns either forward's rounding noise there into full steps
        if name.endswith("attn.b_K"):
            continue
        assert torch.allclose(finals[0][name], finals[1][name], atol=1e-4), name
