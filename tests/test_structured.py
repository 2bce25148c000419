"""The structured training path of the paper model equals its HookedTransformer view: the
forward pass at the last position and the gradients of every W_Q (the A matrices) and of W_U (the
readout W), to 1e-5. The hooked model is the reference (tests/test_models.py checks it against the
plain CatFormer formula)."""

from __future__ import annotations

import pytest
import torch

from interp_causal.models import native, paper_layout, paper_model, standard_model, structured
from interp_causal.tasks import CausalGraph, InContextTask
from interp_causal.training import Recipe, Trainer, last_position_loss

pytestmark = pytest.mark.needs_hooked
TOL = 1e-5


def chain_task(T: int = 20, S: int = 10) -> InContextTask:
    return InContextTask(CausalGraph.chain(T), vocab_size=S)


def two_parent_task(T: int = 16, S: int = 5) -> InContextTask:
    return InContextTask(CausalGraph.two_parent(T), vocab_size=S)


def randomise(model, seed: int, scale: float = 1.0) -> None:
    """Random A blocks (every head of every layer) and a random readout W."""
    g = torch.Generator().manual_seed(seed)
    layout = paper_layout(model)
    with torch.no_grad():
        for layer, m in enumerate(layout.heads):
            w = layout.widths[layer]
            model.blocks[layer].attn.W_Q[:m, :w, :w] = scale * torch.randn(m, w, w, generator=g)
        model.unembed.W_U.copy_(torch.randn(model.unembed.W_U.shape, generator=g))


def forward_and_grads(model, tokens: torch.Tensor, target: torch.Tensor, structured_path: bool):
    model.zero_grad(set_to_none=True)
    if structured_path:
        logits = structured.last_logits(model, tokens)
    else:
        logits = model(tokens)[:, -1]
    loss = -(target * logits.log_softmax(-1)).sum(-1).mean()
    loss.backward()
    grads = {name: (p.grad.clone() if p.grad is not None else None) for name, p in model.named_parameters()}
    return logits.detach(), grads


def assert_same(model, tokens, target):
    assert structured.supports(model)
    want, want_grads = forward_and_grads(model, tokens, target, structured_path=False)
    got, got_grads = forward_and_grads(model, tokens, target, structured_path=True)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= TOL, (got - want).abs().max()
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained, "nothing trains"
    for name in trained:
        if want_grads[name] is None:
            assert got_grads[name] is None
            continue
        assert got_grads[name] is not None, name
        err = (got_grads[name] - want_grads[name]).abs().max()
        assert err <= TOL, (name, float(err))
    return want_grads


CASES = {
    "(1,1) chain": (chain_task, (1, 1)),
    "(2,1) two-parent": (two_parent_task, (2, 1)),
    "(3,1) chain": (lambda: chain_task(12, 6), (3, 1)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("init", ["random", "zero", "normal"])
def test_structured_equals_hooked(case, init, structured_path):
    make_task, heads = CASES[case]
    task = make_task()
    model = paper_model(task, heads=heads, init="zero" if init == "zero" else "normal", seed=3)
    if init == "random":
        randomise(model, seed=7)
    batch = task.sample(96, torch.Generator().manual_seed(11))
    grads = assert_same(model, batch.tokens, batch.target)
    if init == "random":  # a test that would pass with zero gradients proves nothing
        assert grads["blocks.0.attn.W_Q"].abs().max() > 1e-3
        assert grads["unembed.W_U"].abs().max() > 1e-3


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("layer1", ["tables", "gathered"])
def test_both_ways_of_reading_layer_1_equal_the_hooked_model(monkeypatch, case, layer1):
    """Layer 1 through exp-tables and matrix products, or through its gathered patterns, whatever
    the vocabulary size would choose (the torch path; the compiled kernel switched off)."""
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    monkeypatch.setattr(structured, "TABLES_MAX_VOCAB", 10**6 if layer1 == "tables" else 0)
    make_task, heads = CASES[case]
    task = make_task()
    model = paper_model(task, heads=heads, init="normal", seed=3)
    randomise(model, seed=8)
    batch = task.sample(80, torch.Generator().manual_seed(12))
    grads = assert_same(model, batch.tokens, batch.target)
    assert grads["blocks.0.attn.W_Q"].abs().max() > 1e-3


def test_tables_whose_exp_underflows_leave_the_batch_to_the_gathered_patterns(monkeypatch):
    """A score of +120 for one token pair: a row whose sequence lacks that token lies 120 below its
    table row's largest score, exp underflows to 0, and the batch must still come out exact."""
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    task = two_parent_task()
    model = paper_model(task, heads=(2, 1), init="normal", seed=3)
    randomise(model, seed=8, scale=0.3)
    with torch.no_grad():
        model.blocks[0].attn.W_Q[0, 1, 4] = 120.0  # query token 1, key token 4
    batch = task.sample(80, torch.Generator().manual_seed(12))
    fell_back = []
    attempt = structured._Tables.attempt.__func__
    monkeypatch.setattr(structured._Tables, "attempt",
                        classmethod(lambda cls, Q, x: fell_back.append(attempt(cls, Q, x) is None) or attempt(cls, Q, x)))
    assert_same(model, batch.tokens, batch.target)
    assert fell_back and all(fell_back)


def test_structured_equals_hooked_at_init_zero_after_a_step(structured_path):
    """Zero init has a zero A gradient; one SGD step on W makes every gradient non-zero."""
    task = chain_task()
    model = paper_model(task, init="zero")
    batch = task.sample(128, torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.unembed.W_U.add_(0.3 * torch.randn(model.unembed.W_U.shape, generator=torch.Generator().manual_seed(2)))
    grads = assert_same(model, batch.tokens, batch.target)
    assert grads["blocks.0.attn.W_Q"].abs().max() > 0 and grads["blocks.1.attn.W_Q"].abs().max() > 0


@pytest.mark.parametrize("heads", [(1,), (1, 1, 1), (1, 2)])
def test_other_depths_and_head_counts(heads):
    task = chain_task(10, 5)
    model = paper_model(task, heads=heads, init="normal")
    randomise(model, seed=5, scale=0.5)
    batch = task.sample(64, torch.Generator().manual_seed(4))
    assert_same(model, batch.tokens, batch.target)


def test_shorter_sequences_than_the_context(structured_path):
    task = chain_task()
    model = paper_model(task, init="normal")
    randomise(model, seed=9)
    batch = task.sample(64, torch.Generator().manual_seed(6))
    assert_same(model, batch.tokens[:, :13], batch.target)


def test_reduced_model_keeps_its_gradient_masks(structured_path):
    task = chain_task()
    model = paper_model(task, reduced=True)
    with torch.no_grad():
        model.blocks[0].attn.W_Q[0, 10:30, 10:30] = torch.randn(20, 20, generator=torch.Generator().manual_seed(0))
    batch = task.sample(128, torch.Generator().manual_seed(8))
    grads = assert_same(model, batch.tokens, batch.target)
    g0, g1 = grads["blocks.0.attn.W_Q"], grads["blocks.1.attn.W_Q"]
    outside0 = g0.clone()
    outside0[0, 10:30, 10:30] = 0
    outside1 = g1.clone()
    outside1[0, 0:10, 30:40] = 0
    assert g0.abs().max() > 0 and outside0.abs().max() == 0 and outside1.abs().max() == 0


def test_last_position_loss_dispatches_and_matches_the_hooked_loss():
    task = chain_task()
    model = paper_model(task, init="normal")
    randomise(model, seed=1)
    batch = task.sample(64, torch.Generator().manual_seed(2))
    want = -(batch.target * model(batch.tokens)[:, -1].log_softmax(-1)).sum(-1).mean()
    assert structured.supports(model)
    assert abs(last_position_loss(model, batch).item() - want.item()) < TOL


def test_hooks_or_changed_fixed_weights_fall_back_to_the_hooked_forward():
    task = chain_task(8, 4)
    model = paper_model(task)
    assert structured.supports(model)
    fired = []
    model.blocks[0].attn.hook_pattern.add_hook(lambda t, hook: fired.append(hook.name))
    assert not structured.supports(model)
    batch = task.sample(8, torch.Generator().manual_seed(0))
    last_position_loss(model, batch)
    assert fired == ["blocks.0.attn.hook_pattern"]  # the user's hook ran: the generic path was used
    model.reset_hooks()
    assert structured.supports(model)
    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", lambda t, hook: None)]):
        assert not structured.supports(model)
    assert structured.supports(model)
    with torch.no_grad():
        model.blocks[0].attn.W_K[0, 0, 0] = 2.0  # no longer the disentangled transformer
    assert not structured.supports(model)
    with torch.no_grad():
        model.blocks[0].attn.W_K[0, 0, 0] = 1.0
    assert structured.supports(model)
    model.load_state_dict(paper_model(task).state_dict())  # a reload keeps it valid
    assert structured.supports(model)


def test_standard_presets_take_the_generic_path():
    task = chain_task(8, 4)
    assert not structured.supports(standard_model(task))


@pytest.mark.parametrize("optimizer, lr, atol", [("sgd", 1.0, 1e-5), ("adamw", 5e-2, 2e-3)])
def test_training_is_the_same_on_both_paths(optimizer, lr, atol, structured_path):
    """A few steps through the trainer: structured path vs the hooked forward (forced by a no-op
    hook) end at the same weights.

    SGD moves each weight by its gradient, so the paths agree to 1e-5. AdamW divides by the
    gradient's own size: an entry whose true gradient is ~1e-9 (both paths give it, equal to ~1%)
    moves by a sizeable part of ``lr`` either way, so float rounding shows as up to 4e-4
    (measured). What must stay exact is a gradient that is exactly 0: position 0 attends to itself
    alone, so layer 1's position-0 query row gets none on the hooked path, and the fast path must
    not give it rounding noise (which AdamW turns into steps; ``_Tables`` detaches those rows)."""
    task = chain_task(10, 5)
    recipe = Recipe(optimizer, lr, 1e-3, "cosine", steps=6, batch_size=64, init="normal", eval_every=3, test_size=64)
    finals = []
    for force_hooked in (False, True):
        model = paper_model(task, init="normal", seed=1)
        if force_hooked:
            model.blocks[0].hook_resid_pre.add_hook(lambda t, hook: None)
            assert not structured.supports(model)
        trainer = Trainer(model, task, recipe, seed=4, progress=False)
        trainer.fit()
        finals.append({n: p.detach().clone() for n, p in model.named_parameters()})
    moved = paper_model(task, init="normal", seed=1).state_dict()
    assert max(float((finals[0][n] - moved[n]).abs().max()) for n in finals[0]) > 10 * atol  # it trained
    for name in finals[0]:
        assert torch.allclose(finals[0][name], finals[1][name], atol=atol), name
    root_row = finals[1]["blocks.0.attn.W_Q"][:, task.vocab_size + 0]  # the query at position 0
    assert torch.equal(finals[0]["blocks.0.attn.W_Q"][:, task.vocab_size + 0], root_row)
