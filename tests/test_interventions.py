"""Interventions (ablate, clamp, patch) checked against forward passes written out by hand.

The references never call the code under test: ``reference_forward`` (plain torch, from the
weights) with the pattern or head output replaced, and, for Hugging Face models, the model itself
with the head's columns of its output projection zeroed.
"""

from __future__ import annotations

import pytest
import torch

from probes import (
    Ablate, AblationProbe, Clamp, Patch, PatchingProbe, ParentAttention, ProbeSuite, chain_parents, intervene, named_pattern,
)
from probes.induction import repeated_random_tokens
from probes.sites import as_logits, run_with_sites
from tests.probes_helpers import PLANTED, Config, all_models, planted_weights, random_weights, reference_forward

CFG = Config(n_layers=2, n_heads=3, d_model=16, d_head=4, n_ctx=12, d_vocab=10, attn_scale=2.0)


def _models(cfg=CFG, weights=None):
    weights = random_weights(cfg, seed=3, std=0.3) if weights is None else weights
    return weights, all_models(cfg, weights)


def _tokens(n=5, T=12, vocab=10, seed=0):
    return torch.randint(0, vocab, (n, T), generator=torch.Generator().manual_seed(seed))


def _random_causal_pattern(B, T, seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(B, T, T, generator=g) * torch.ones(T, T).tril()
    return p / p.sum(-1, keepdim=True)


@pytest.mark.parametrize("kind", ["hooked_transformer", "bridge", "plain"])
def test_a_clamped_pattern_is_exactly_the_one_the_model_uses(kind):
    weights, models = _models()
    if kind not in models:
        pytest.skip(f"no {kind} in this TransformerLens")
    model, site_map = models[kind]
    tokens = _tokens()
    given = _random_causal_pattern(5, 12, seed=1)
    previous = torch.zeros(12, 12)
    previous[0, 0] = 1.0
    previous[torch.arange(1, 12), torch.arange(11)] = 1.0
    want, _ = reference_forward(CFG, weights, tokens, patterns_set={(0, 1): previous, (1, 2): given})
    plain, _ = reference_forward(CFG, weights, tokens)
    assert (want - plain).abs().max() > 1e-2  # the clamp matters
    with torch.no_grad(), intervene(model, [Clamp(0, 1, "previous"), Clamp(1, 2, given)], site_map) as m:
        got, acts = run_with_sites(m, tokens, ["blocks.0.attn.hook_pattern"], site_map)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(acts["blocks.0.attn.hook_pattern"][:, 1], previous.expand(5, 12, 12))  # probes see it
    with torch.no_grad():
        after = m(tokens)
    torch.testing.assert_close(after, plain, atol=1e-5, rtol=0)  # removed on exit


def test_a_probe_inside_a_clamp_reads_the_clamped_pattern():
    weights, models = _models()
    model, site_map = models["bridge"]
    tokens = _tokens()
    with intervene(model, [Clamp(0, 2, "parents", parents=chain_parents(12))]) as m:
        result = ProbeSuite([ParentAttention(chain_parents(12), layers=[0])]).run(m, tokens)
    mass = {r.head: r.value for r in result.records if r.metric == "mass"}
    assert mass[2] == pytest.approx(1.0, abs=1e-6) and mass[0] < 0.9


def _distinct_repeated_tokens(batch, period, vocab, seed):
    """Repeated random tokens with no repeat inside a period, so that an induction head is sure."""
    g = torch.Generator().manual_seed(seed)
    first = torch.stack([torch.randperm(vocab, generator=g)[:period] for _ in range(batch)])
    return torch.cat([first, first], 1)


def _repeated_half_loss(logits, tokens, period):
    # predictions of positions period+2 .. 2*period-1 (position 0 is its own "previous token", so
    # the query at `period` also matches key 0)
    pred = logits[:, period + 1:-1].log_softmax(-1)
    target = tokens[:, period + 2:]
    return float(-pred.gather(-1, target[..., None]).mean())


@pytest.mark.parametrize("kind", ["hooked_transformer", "bridge", "plain"])
def test_zero_ablating_the_planted_induction_head_costs_a_nat_and_inert_heads_nothing(kind):
    weights = planted_weights()
    weights["unembed.W_U"] = 20.0 * weights["unembed.W_U"]  # a confident readout: the copied token's logit is 20
    models = all_models(PLANTED, weights)
    if kind not in models:
        pytest.skip(f"no {kind} in this TransformerLens")
    model, site_map = models[kind]
    period = 16
    tokens = _distinct_repeated_tokens(8, period, PLANTED.d_vocab, seed=0)
    with torch.no_grad():
        clean = model(tokens)
    base = _repeated_half_loss(clean, tokens, period)
    losses = {}
    for layer, head in [(0, 0), (1, 0), (1, 1)]:
        want, _ = reference_forward(PLANTED, weights, tokens, z_set={(layer, head): torch.zeros(PLANTED.d_head)})
        with torch.no_grad(), intervene(model, [Ablate(layer, head)], site_map) as m:
            got = m(tokens)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        losses[(layer, head)] = _repeated_half_loss(got, tokens, period)
    assert base < 0.01
    assert losses[(1, 0)] - base >= 1.0
    assert abs(losses[(0, 0)] - base) < 1e-4 and abs(losses[(1, 1)] - base) < 1e-4


@pytest.mark.parametrize("how", ["mean", "resample"])
def test_mean_and_resample_ablation_match_the_reference(how):
    weights, models = _models()
    model, site_map = models["bridge"]
    tokens, reference = _tokens(4, seed=0), _tokens(3, seed=9)
    z_ref: dict = {}
    reference_forward(CFG, weights, reference, z_out=z_ref)
    head_ref = z_ref[1][:, :, 0]  # [3, T, d_head]
    value = head_ref.mean(0) if how == "mean" else head_ref[torch.arange(4) % 3]
    want, _ = reference_forward(CFG, weights, tokens, z_set={(1, 0): value})
    with torch.no_grad(), intervene(model, [Ablate(1, 0, how, reference=reference)], site_map) as m:
        got = m(tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["hooked_transformer", "bridge", "plain"])
def test_patching_to_corrupted_and_back_restores_the_clean_output_exactly(kind):
    weights, models = _models()
    if kind not in models:
        pytest.skip(f"no {kind} in this TransformerLens")
    model, site_map = models[kind]
    clean, corrupted = _tokens(4, seed=1), _tokens(4, seed=2)
    with torch.no_grad():
        out = model(clean)
        with intervene(model, [Patch(1, 1, source=corrupted)], site_map) as m:
            away = m(clean)
        with intervene(model, [Patch(1, 1, source=corrupted), Patch(1, 1, source=clean)], site_map) as m:
            back = m(clean)
    assert (away - out).abs().max() > 1e-3
    assert torch.equal(back, out)


def test_patching_the_planted_induction_head_carries_the_clean_output_over():
    # In the planted model only L1H0 writes what the unembedding reads, so its output alone fixes the logits.
    weights = planted_weights()
    model, _ = all_models(PLANTED, weights)["bridge"]
    g = torch.Generator().manual_seed(4)
    clean = repeated_random_tokens(4, 16, PLANTED.d_vocab, g)
    corrupted = repeated_random_tokens(4, 16, PLANTED.d_vocab, g)
    with torch.no_grad():
        want = model(clean)
        with intervene(model, [Patch(1, 0, source=clean)]) as m:
            got = m(corrupted)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_ablation_on_a_transformers_model_equals_zeroing_the_heads_output_columns(arch):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=16, n_positions=32)).eval()
        proj, dh = model.transformer.h[1].attn.c_proj.weight, 16  # Conv1D [in, out]: head h is rows h*dh..
        rows = lambda w: w[dh:2 * dh]  # noqa: E731
    else:
        model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             hidden_size=32, intermediate_size=64, vocab_size=16,
                                             max_position_embeddings=32)).eval()
        proj, dh = model.model.layers[1].self_attn.o_proj.weight, 8  # Linear [out, in]: head h is columns h*dh..
        rows = lambda w: w[:, dh:2 * dh]  # noqa: E731
    tokens = _tokens(3, 20, 16)
    with torch.no_grad():
        with intervene(model, [Ablate(1, 1)]) as m:
            got = as_logits(m(tokens))
        plain = model(tokens).logits
        saved = proj.detach().clone()
        rows(proj).zero_()
        want = model(tokens).logits
        proj.copy_(saved)
    assert (want - plain).abs().max() > 1e-4
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_clamping_a_transformers_head_to_its_own_pattern_changes_nothing():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=16, n_positions=32)).eval()
    model.config._attn_implementation = "eager"
    tokens = _tokens(3, 20, 16)
    with torch.no_grad():
        out = model(tokens, output_attentions=True)
        own = out.attentions[1][:, 0]  # [batch, q, k], Hugging Face's own probabilities
        with intervene(model, [Clamp(1, 0, own)]) as m:
            same = as_logits(m(tokens))
        with intervene(model, [Clamp(1, 0, "previous")]) as m:
            moved = as_logits(m(tokens))
    torch.testing.assert_close(same, out.logits, atol=1e-5, rtol=0)
    assert (moved - out.logits).abs().max() > 1e-3


def test_named_patterns_against_brute_force():
    tokens = torch.tensor([[3, 1, 3, 1, 2, 3]])
    parents = [[], [0], [0, 1], [2], [1, 3], [4]]
    ind = named_pattern("induction", tokens)[0]
    for i in range(6):
        matches = [j for j in range(1, i + 1) if tokens[0, j - 1] == tokens[0, i]] or [i]
        want = torch.zeros(6)
        want[matches] = 1.0 / len(matches)
        torch.testing.assert_close(ind[i], want)
    par = named_pattern("parents", tokens, parents)[0]
    assert par[2].tolist() == [0.5, 0.5, 0, 0, 0, 0] and par[0, 0] == 1.0
    second = named_pattern("parents:1", tokens, parents)[0]
    assert second[2, 1] == 1.0 and second[3, 3] == 1.0  # position 3 has no second parent: itself
    gi = named_pattern("graph_induction", tokens, parents)[0]
    # query token s_5 = 3; positions whose single parent holds a 3: 1 (parent 0), 3 (parent 2)
    assert gi[5].tolist() == [0, 0.5, 0, 0.5, 0, 0] and gi[2, 2] == 1.0


def test_bad_input_is_refused_with_the_argument_named():
    _, models = _models()
    model, _ = models["bridge"]
    with pytest.raises(ValueError, match="layer"):
        with intervene(model, [Ablate(2, 0)]):
            pass
    with pytest.raises(ValueError, match="head"):
        with intervene(model, [Clamp(0, 3, "previous")]):
            pass
    with pytest.raises(ValueError, match="pattern"):
        Clamp(0, 0, "prevous")
    with pytest.raises(ValueError, match="parents"):
        Clamp(0, 0, "parents")
    with pytest.raises(ValueError, match="sum to 1"):
        Clamp(0, 0, torch.full((12, 12), 0.5).tril())
    with pytest.raises(ValueError, match="later positions"):
        Clamp(0, 0, torch.full((12, 12), 1 / 12))
    with pytest.raises(ValueError, match="shape"):
        Clamp(0, 0, torch.ones(3, 4))
    with pytest.raises(ValueError, match="how"):
        Ablate(0, 0, "median")
    with pytest.raises(ValueError, match="reference"):
        Ablate(0, 0, "mean")
    with pytest.raises(ValueError, match="12 x 12"), intervene(model, [Clamp(0, 0, torch.eye(5))]) as m:
        m(_tokens())


# ---- causal scores as probes -----------------------------------------------------------------
def _planted_confident():
    weights = planted_weights()
    weights["unembed.W_U"] = 20.0 * weights["unembed.W_U"]
    return weights


@pytest.mark.parametrize("kind", ["hooked_transformer", "bridge", "plain"])
def test_ablation_probe_scores_each_head_by_the_loss_it_costs(kind):
    weights = _planted_confident()
    models = all_models(PLANTED, weights)
    if kind not in models:
        pytest.skip(f"no {kind} in this TransformerLens")
    model, site_map = models[kind]
    period = 16
    tokens = _distinct_repeated_tokens(6, period, PLANTED.d_vocab, seed=1)
    result = ProbeSuite([AblationProbe(start=period + 2)]).run(model, tokens, site_map)
    got = {(r.layer, r.head): r for r in result.records}
    assert set(got) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    clean_logits, _ = reference_forward(PLANTED, weights, tokens)
    clean = _repeated_half_loss(clean_logits, tokens, period)
    for (layer, head), record in got.items():
        ablated_logits, _ = reference_forward(PLANTED, weights, tokens, z_set={(layer, head): torch.zeros(PLANTED.d_head)})
        want = _repeated_half_loss(ablated_logits, tokens, period) - clean
        assert record.metric == "loss_increase"
        assert record.value == pytest.approx(want, abs=1e-4)
    assert got[(1, 0)].value >= 1.0 and got[(0, 1)].value >= 1.0
    assert abs(got[(0, 0)].value) < 1e-4 and abs(got[(1, 1)].value) < 1e-4


def test_ablation_probe_on_the_task_loss_against_a_reference():
    weights, models = _models()
    model, _ = models["bridge"]
    tokens = _tokens(6)
    reference = torch.softmax(torch.randn(6, 10, generator=torch.Generator().manual_seed(2)), -1)
    result = ProbeSuite([AblationProbe(heads=[(1, 2)])]).run(model, tokens, reference=reference)
    (record,) = result.records
    loss = lambda logits: float(-(reference * logits[:, -1].log_softmax(-1)).sum(-1).mean())  # noqa: E731
    want = loss(reference_forward(CFG, weights, tokens, z_set={(1, 2): torch.zeros(CFG.d_head)})[0])
    assert record.metric == "reference_loss_increase"
    assert record.value == pytest.approx(want - loss(reference_forward(CFG, weights, tokens)[0]), abs=1e-5)


def test_patching_probe_finds_the_head_that_carries_the_answer():
    weights = _planted_confident()
    model, _ = all_models(PLANTED, weights)["bridge"]
    g = torch.Generator().manual_seed(5)
    clean = _distinct_repeated_tokens(6, 16, PLANTED.d_vocab, seed=5)
    corrupted = clean.clone()
    corrupted[:, 16:] = torch.randint(0, PLANTED.d_vocab, (6, 16), generator=g)  # break the repeat
    result = ProbeSuite([PatchingProbe(start=18)]).run(model, clean, corrupted=corrupted)
    got = {(r.layer, r.head): r.value for r in result.records}
    assert got[(1, 0)] == pytest.approx(1.0, abs=1e-5)  # the logits read L1H0 alone
    assert abs(got[(0, 0)]) < 1e-6 and abs(got[(1, 1)]) < 1e-6
    with pytest.raises(ValueError, match="corrupted"):
        ProbeSuite([PatchingProbe()]).run(model, clean)
