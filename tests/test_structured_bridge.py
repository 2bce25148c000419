"""The structured training path on the ``TransformerBridge`` (TransformerLens 4's model, and 3's
bridge): the paper model's last-position logits and the gradients of the bridge's own weights
(``q.weight``, the A matrices; ``unembed.weight``, the readout) equal the bridge's own forward to
1e-5 on random A, W and tokens; the trainer takes the path on the bridge, and trains as the
bridge's own forward does. The reference is the bridge's forward, not the structured code."""

from __future__ import annotations

import pytest
import torch

from interp_causal.models import paper_layout, paper_model, structured
from interp_causal.tasks import CausalGraph, InContextTask
from interp_causal.training import Recipe, Trainer

TOL = 1e-5


def _bridge_has_the_paper_layout() -> bool:
    # TransformerLens 3.9's native bridge has no W_Q / W_U views, so the paper model is not recognised
    # there and training takes the bridge's own forward (3.9 trains HookedTransformer by default)
    model = paper_model(InContextTask(CausalGraph.chain(6), 3), backend="bridge")
    return paper_layout(model) is not None


pytestmark = pytest.mark.skipif(not _bridge_has_the_paper_layout(), reason="this bridge exposes no W_Q / W_U views")
CASES = {  # two layers: the compiled kernel or its torch ops (the structured_path fixture)
    "(1,1) chain": (lambda: InContextTask(CausalGraph.chain(20), 10), (1, 1)),
    "(2,1) two-parent": (lambda: InContextTask(CausalGraph.two_parent(16), 5), (2, 1)),
    "(3,1) chain": (lambda: InContextTask(CausalGraph.chain(12), 6), (3, 1)),
}
DEEPER = {"(1,1,1) chain": (lambda: InContextTask(CausalGraph.chain(10), 5), (1, 1, 1))}  # torch ops only


def randomise(model, seed: int) -> None:
    """Random A blocks of every head (through the bridge's own q.weight) and a random readout."""
    g = torch.Generator().manual_seed(seed)
    layout = paper_layout(model)
    with torch.no_grad():
        for layer, m in enumerate(layout.heads):
            w, d_head = layout.widths[layer], model.cfg.d_head
            q = model.blocks[layer].attn.q.weight  # [(head d_head), d_model]: head h's A is rows h*d_head.. , transposed
            for h in range(m):
                q[h * d_head : h * d_head + w, :w] = torch.randn(w, w, generator=g)
        model.unembed.weight.copy_(torch.randn(model.unembed.weight.shape, generator=g))


def grads_of(model, logits: torch.Tensor, target: torch.Tensor) -> dict:
    model.zero_grad(set_to_none=True)
    (-(target * logits.log_softmax(-1)).sum(-1).mean()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("case", list(CASES))
def test_structured_equals_the_bridge_forward(case, structured_path):
    _assert_structured_equals_the_bridge_forward(*CASES[case])


@pytest.mark.parametrize("case", list(DEEPER))
def test_structured_equals_the_bridge_forward_deeper(case):
    _assert_structured_equals_the_bridge_forward(*DEEPER[case])


def _assert_structured_equals_the_bridge_forward(make_task, heads: tuple) -> None:
    task = make_task()
    model = paper_model(task, heads=heads, init="normal", seed=3, backend="bridge")
    randomise(model, seed=7)
    assert structured.supports(model), structured.unsupported_reason(model)
    batch = task.sample(96, torch.Generator().manual_seed(11))
    want = model(batch.tokens)[:, -1]
    want_grads = grads_of(model, want, batch.target)
    got = structured.last_logits(model, batch.tokens)
    got_grads = grads_of(model, got, batch.target)
    assert (got - want).abs().max() <= TOL, float((got - want).abs().max())
    assert want_grads.keys() == got_grads.keys() and want_grads
    for name, g in want_grads.items():
        assert (got_grads[name] - g).abs().max() <= TOL * max(1.0, float(g.abs().max())), name
    q = next(n for n, p in model.named_parameters() if p is model.blocks[0].attn.q.weight)
    assert want_grads[q].abs().max() > 1e-3  # not a pass by zero gradients


def test_a_hook_on_the_bridge_sends_training_to_its_own_forward():
    task = InContextTask(CausalGraph.chain(10), 5)
    model = paper_model(task, init="normal", seed=1, backend="bridge")
    assert structured.supports(model)
    model.blocks[0].hook_resid_pre.add_hook(lambda t, hook: None)
    assert not structured.supports(model) and "hooks" in structured.unsupported_reason(model)


@pytest.mark.parametrize("optimizer, lr, atol", [("sgd", 1.0, 1e-5), ("adamw", 5e-2, 2e-3)])
def test_training_the_bridge_is_the_same_on_both_paths(optimizer, lr, atol, structured_path):
    """A few steps: the trainer's auto forward (structured on the bridge) and the bridge's own
    forward (forward="hooked") end at the same weights and test losses. The tolerances are
    test_structured's (AdamW turns both paths' ~1e-9 gradients into rounding-sized steps), and so
    is the exact check: layer 1's position-0 query row, whose true gradient is 0, moves alike."""
    task = InContextTask(CausalGraph.chain(10), 5)
    recipe = Recipe(optimizer, lr, 1e-3, "cosine", steps=6, batch_size=64, init="normal", eval_every=3, test_size=64)
    finals, losses, root_rows = [], [], []
    for forward in ("auto", "hooked"):
        model = paper_model(task, init="normal", seed=1, backend="bridge")
        trainer = Trainer(model, task, recipe, seed=4, progress=False, forward=forward)
        assert structured.supports(model)  # so "auto" trains through the structured path
        trainer.fit()
        finals.append({n: p.detach().clone() for n, p in model.named_parameters()})
        losses.append([r["test_loss"] for r in trainer.history])
        root_rows.append(model.blocks[0].attn.W_Q[:, task.vocab_size + 0].detach().clone())
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert abs(losses[0][-1] - losses[0][0]) > 1e-3  # it trained
    for name in finals[0]:
        assert torch.allclose(finals[0][name], finals[1][name], atol=atol), name
    assert torch.equal(root_rows[0], root_rows[1])
