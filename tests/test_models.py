"""Tests of the models: the paper's disentangled transformer against a plain-torch CatFormer
written out here from docs/science.md §2, what training may change, and the presets' hooks."""

from __future__ import annotations

import pytest
import torch

from interp_causal.models import (
    PRESETS,
    attention_matrices,
    build_model,
    check_model_matches_task,
    paper_layout,
    paper_model,
    readout,
)
from interp_causal.tasks import CausalGraph, InContextTask


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# the reference: docs/science.md §2 (official CatFormer) in plain torch, float64
# ---------------------------------------------------------------------------------------------
def catformer_logprobs(tokens: torch.Tensor, As: list[list[torch.Tensor]], W: torch.Tensor, S: int) -> torch.Tensor:
    """log softmax(W^T H_{T-1}) with x_i = [onehot(s_i); onehot(i)] and, per layer,
    H <- [H, attn(H; A_1), ..., attn(H; A_m)], attn(H; A) = softmax(causal_mask(H A H^T)) H."""
    n, T = tokens.shape
    H = torch.cat(
        [torch.nn.functional.one_hot(tokens, S).double(), torch.eye(T, dtype=torch.float64).expand(n, T, T)], dim=-1
    )
    keep = torch.tril(torch.ones(T, T, dtype=torch.bool))  # keep j <= i
    for layer in As:
        outs = [H]
        for A in layer:
            scores = H @ A.double() @ H.transpose(1, 2)
            scores = scores.masked_fill(~keep, float("-inf"))
            outs.append(torch.softmax(scores, dim=-1) @ H)
        H = torch.cat(outs, dim=-1)
    return torch.log_softmax(H[:, -1] @ W.double(), dim=-1)


def widths(S: int, T: int, heads) -> list[int]:
    ws = [S + T]
    for m in heads:
        ws.append(ws[-1] * (1 + m))
    return ws


def set_random_A_and_W(model, S, T, heads, seed, scale=0.5):
    """Random A per head written into the W_Q blocks, random W into W_U; returns them."""
    g = gen(seed)
    ws = widths(S, T, heads)
    As = []
    with torch.no_grad():
        for layer, m in enumerate(heads):
            d = ws[layer]
            layer_As = []
            for h in range(m):
                A = scale * torch.randn(d, d, generator=g)
                model.blocks[layer].attn.W_Q[h, :d, :d] = A
                layer_As.append(A)
            As.append(layer_As)
        W = torch.randn(ws[-1], S, generator=g)
        model.unembed.W_U.copy_(W)
    return As, W


@pytest.mark.parametrize("heads, graph", [((1, 1), "chain"), ((2, 1), "two-parent"), ((1, 1), "icl")])
def test_paper_model_equals_the_catformer_formula(heads, graph):
    S, T, n = 5, 9, 32
    task = InContextTask(CausalGraph.by_name(graph, T), vocab_size=S)
    model = paper_model(task, heads=heads)
    ws = widths(S, T, heads)
    assert model.cfg.d_model == ws[-1]
    assert tuple(paper_layout(model).widths) == tuple(ws)
    assert tuple(model.W_U.shape) == (ws[-1], S)
    As, W = set_random_A_and_W(model, S, T, heads, seed=1)
    tokens = torch.randint(0, S, (n, T), generator=gen(2))
    with torch.no_grad():
        got = model(tokens, return_type="logits")[:, -1].double().log_softmax(-1)
    want = catformer_logprobs(tokens, As, W, S)
    assert (got - want).abs().max().item() <= 1e-5
    # the accessors read back what was written
    for layer, layer_As in enumerate(As):
        read = attention_matrices(model, layer)
        assert read.shape[0] == len(layer_As)
        for h, A in enumerate(layer_As):
            assert torch.equal(read[h], A)
    assert torch.equal(readout(model), W)


def test_reference_is_not_trivially_satisfied():
    # guard for the comparison above: a different A changes the reference's output
    S, T = 4, 7
    tokens = torch.randint(0, S, (8, T), generator=gen(3))
    ws = widths(S, T, (1, 1))
    g = gen(4)
    As = [[torch.randn(ws[0], ws[0], generator=g)], [torch.randn(ws[1], ws[1], generator=g)]]
    W = torch.randn(ws[2], S, generator=g)
    a = catformer_logprobs(tokens, As, W, S)
    b = catformer_logprobs(tokens, [[As[0][0].T], As[1]], W, S)
    assert (a - b).abs().max() > 1e-3


def test_zero_init_outputs_uniform():
    S, T = 6, 8
    task = InContextTask(CausalGraph.chain(T), vocab_size=S)
    model = paper_model(task)
    tokens = torch.randint(0, S, (4, T), generator=gen(5))
    with torch.no_grad():
        lp = model(tokens, return_type="logits")[:, -1].log_softmax(-1)
    assert torch.allclose(lp, torch.full_like(lp, -torch.log(torch.tensor(float(S)))), atol=1e-6)
    for layer in range(2):
        assert torch.count_nonzero(attention_matrices(model, layer)) == 0


def test_normal_init_is_seeded_and_scaled():
    task = InContextTask(CausalGraph.two_parent(8), vocab_size=4)
    a = paper_model(task, heads=(2, 1), init="normal", init_scale=1e-4, seed=3)
    b = paper_model(task, heads=(2, 1), init="normal", init_scale=1e-4, seed=3)
    c = paper_model(task, heads=(2, 1), init="normal", init_scale=1e-4, seed=4)
    for layer in range(2):
        A = attention_matrices(a, layer)
        assert torch.equal(A, attention_matrices(b, layer))
        assert not torch.equal(A, attention_matrices(c, layer))
        assert 0 < A.abs().max() < 1e-4 * 6  # entries of 1e-4 N(0, 1)
        assert 0.5e-4 < A.std() < 2e-4


def test_bad_model_arguments():
    task = InContextTask(CausalGraph.chain(6), vocab_size=3)
    with pytest.raises(ValueError, match="init"):
        paper_model(task, init="xavier")
    with pytest.raises((ValueError, TypeError), match="heads"):
        paper_model(task, heads=(0, 1))
    with pytest.raises((ValueError, TypeError), match="heads"):
        paper_model(task, heads=(2, 1), reduced=True)
    with pytest.raises(ValueError, match="model"):
        build_model("nonsense", task)


# ---------------------------------------------------------------------------------------------
# what training may change
# ---------------------------------------------------------------------------------------------
TRAINABLE = ("unembed.W_U",)


def is_trainable(name: str) -> bool:
    return name == "unembed.W_U" or (name.startswith("blocks.") and name.endswith(".attn.W_Q"))


def train_steps(model, task, make_opt, steps=10, seed=0):
    opt = make_opt(list(model.parameters()))  # all parameters: frozen ones must not move anyway
    g = gen(seed)
    model.train()
    for _ in range(steps):
        batch = task.sample(64, g)
        opt.zero_grad(set_to_none=True)
        logits = model(batch.tokens, return_type="logits")[:, -1]
        loss = -(batch.target * logits.log_softmax(-1)).sum(-1).mean()
        loss.backward()
        opt.step()


OPTIMIZERS = {
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=1.0, weight_decay=1e-3),
}


def snapshot(model) -> dict[str, torch.Tensor]:
    """The state in HookedTransformer names and layouts, whichever backend built ``model``.

    A TransformerBridge stores ``nn.Linear`` layouts (``blocks.L.attn.q.weight [(head d_head), d_model]``,
    ``o.weight [d_model, (head d_head)]``, ``unembed.weight [vocab, d_model]``); they are turned back
    here, written out independently of the adapter under test.
    """
    import einops

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if "unembed.W_U" in sd:
        return sd
    h = model.cfg.n_heads
    top = {"embed.weight": "embed.W_E", "pos_embed.weight": "pos_embed.W_pos", "unembed.bias": "unembed.b_U"}
    out = {}
    for k, v in sd.items():
        if k in top:
            out[top[k]] = v
        elif k == "unembed.weight":
            out["unembed.W_U"] = v.T
        else:
            prefix, proj, kind = k.rsplit(".", 2)  # blocks.L.attn, q|k|v|o, weight|bias
            name = f"{prefix}.{'W' if kind == 'weight' else 'b'}_{proj.upper()}"
            if proj == "o":
                out[name] = einops.rearrange(v, "m (h d) -> h d m", h=h) if kind == "weight" else v
            else:
                out[name] = einops.rearrange(v, "(h d) m -> h m d", h=h) if kind == "weight" else v.view(h, -1)
    return out


def trainable_names(model) -> set[str]:
    """Hooked names of the parameters that require gradients (the bridge's own names mapped back)."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    if any(n.startswith("layers.") or n.startswith("head.") for n in names):
        mapped = set()
        for n in names:
            if n.startswith("head."):
                mapped.add("unembed.W_U")
            else:
                layer, proj = n.split(".")[1], n.split("._original_component.")[-2].rsplit(".", 1)[-1]
                mapped.add(f"blocks.{layer}.attn.W_{proj.upper()}")
        return mapped
    return names


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("heads, init, graph", [((1, 1), "zero", "chain"), ((2, 1), "normal", "two-parent")])
def test_only_A_and_W_train(opt, heads, init, graph):
    S, T = 4, 8
    task = InContextTask(CausalGraph.by_name(graph, T), vocab_size=S)
    model = paper_model(task, heads=heads, init=init, init_scale=1e-2)
    assert trainable_names(model) == {"unembed.W_U", "blocks.0.attn.W_Q", "blocks.1.attn.W_Q"}
    before = snapshot(model)
    train_steps(model, task, OPTIMIZERS[opt])
    after = snapshot(model)
    ws = widths(S, T, heads)
    for name, old in before.items():
        new = after[name]
        if not is_trainable(name):
            assert torch.equal(old, new), f"frozen {name} changed"
            continue
        assert not torch.equal(old, new), f"trainable {name} did not change"
        if name.endswith("W_Q"):
            layer = int(name.split(".")[1])
            d, m = ws[layer], heads[layer]
            outside = new.clone()
            outside[:m, :d, :d] = 0  # only the A blocks of the layer's real heads may be nonzero
            assert torch.count_nonzero(outside) == 0, f"{name} grew outside its A blocks"
            for h in range(m):
                assert not torch.equal(old[h, :d, :d], new[h, :d, :d]), f"{name} head {h} did not learn"


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_reduced_model_trains_only_its_two_blocks(opt):
    S, T = 4, 8
    d0 = S + T
    task = InContextTask(CausalGraph.chain(T), vocab_size=S)
    model = paper_model(task, reduced=True, beta0=0.1)
    before = snapshot(model)
    # start: A^(2) block = beta0 I, layer-1 A zero, readout = identity on the layer-2 copied token
    a2 = before["blocks.1.attn.W_Q"][0, 0:S, d0 : d0 + S]
    assert torch.allclose(a2, 0.1 * torch.eye(S))
    d1 = 2 * d0
    W = before["unembed.W_U"]
    assert torch.equal(W[d1 : d1 + S], torch.eye(S))
    assert torch.count_nonzero(W) == S
    train_steps(model, task, OPTIMIZERS[opt])
    after = snapshot(model)
    allowed = {
        "blocks.0.attn.W_Q": (0, slice(S, d0), slice(S, d0)),  # position x position
        "blocks.1.attn.W_Q": (0, slice(0, S), slice(d0, d0 + S)),  # query token x copied token
    }
    for name, old in before.items():
        new = after[name]
        if name not in allowed:
            assert torch.equal(old, new), f"{name} changed"
            continue
        idx = allowed[name]
        assert not torch.equal(old[idx], new[idx]), f"{name} block did not learn"
        o, nw = old.clone(), new.clone()
        o[idx] = 0
        nw[idx] = 0
        assert torch.equal(o, nw), f"{name} changed outside its block"


# ---------------------------------------------------------------------------------------------
# presets and their hooks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_expose_causal_attention_patterns(name):
    S, T, n = 4, 8, 3
    task = InContextTask(CausalGraph.chain(T), vocab_size=S)
    model = build_model(name, task)
    tokens = torch.randint(0, S, (n, T), generator=gen(6))
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    assert tuple(logits.shape) == (n, T, S)
    assert torch.isfinite(logits).all()
    upper = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for layer in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert tuple(pattern.shape) == (n, model.cfg.n_heads, T, T)
        assert (pattern >= 0).all()
        assert torch.allclose(pattern.sum(-1), torch.ones(n, model.cfg.n_heads, T), atol=1e-5)
        assert (pattern[..., upper] == 0).all(), "attention to a later position"


def test_presets_are_seeded():
    task = InContextTask(CausalGraph.chain(8), vocab_size=4)
    a, b = build_model("mlp", task, seed=1), build_model("mlp", task, seed=1)
    c = build_model("mlp", task, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_mismatched_model_is_refused():
    task = InContextTask(CausalGraph.chain(8), vocab_size=4)
    model = paper_model(task)
    check_model_matches_task(model, task)  # fits: no error
    with pytest.raises(ValueError, match="n_ctx"):
        check_model_matches_task(model, InContextTask(CausalGraph.chain(9), vocab_size=4))
    with pytest.raises(ValueError, match="d_vocab"):
        check_model_matches_task(model, InContextTask(CausalGraph.chain(8), vocab_size=5))
    std = build_model("attn-only", task)
    with pytest.raises(ValueError, match="n_ctx"):
        check_model_matches_task(std, InContextTask(CausalGraph.icl(10), vocab_size=4))
    with pytest.raises(ValueError, match="d_vocab"):
        check_model_matches_task(std, InContextTask(CausalGraph.chain(8), vocab_size=3))


def test_paper_weights_of_rebuild_the_same_model_on_the_default_backend():
    """Read back in HookedTransformer names from whichever backend built the model, the weights
    rebuild a model with the same logits (the tutorial's bridge copy relies on it)."""
    from interp_causal.models import paper_config, paper_weights_of
    from interp_causal.models.backend import instantiate

    task = InContextTask(CausalGraph.two_parent(8), vocab_size=4)
    model = paper_model(task, heads=(2, 1), init="normal", init_scale=0.5, seed=2)
    with torch.no_grad():
        model.unembed.W_U.copy_(torch.randn(model.unembed.W_U.shape, generator=torch.Generator().manual_seed(1)))
    twin = instantiate(paper_config(task, (2, 1)), paper_weights_of(model))
    tokens = task.sample(16, torch.Generator().manual_seed(3)).tokens
    assert torch.allclose(twin(tokens), model(tokens), atol=1e-6)
    assert not torch.allclose(paper_model(task, heads=(2, 1))(tokens), model(tokens), atol=1e-3)
