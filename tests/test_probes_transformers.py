"""Hugging Face models in: GPT-2, Llama and GPT-NeoX, raw, bridged by hand, or wrapped in nnsight.

The reference is the model's own ``output_attentions=True`` probabilities, turned into scores by
the formulas written out here (not the probes' code)."""

from __future__ import annotations

import warnings

import pytest
import torch

from probes import InductionProbe, ParentAttention, PreviousTokenAttention, ProbeSuite
from probes.testing import planted_gpt2, planted_llama

transformers = pytest.importorskip("transformers")
V, T = 16, 32
_GEN = torch.Generator().manual_seed(3)
_HALF = torch.stack([torch.randperm(V, generator=_GEN) for _ in range(6)])  # no token twice in a half
TOKENS = torch.cat([_HALF, _HALF], dim=1)  # [6, 32]: one induction target per repeated position


def small(kind: str, attn: str = "eager", seed: int = 0):
    """A randomly initialised 2-layer, 4-head model of the family, built from a config (no hub)."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    common = dict(vocab_size=V, bos_token_id=0, eos_token_id=0)
    cls, config = {
        "gpt2": (GPT2LMHeadModel, lambda: GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=T, **common)),
        "llama": (LlamaForCausalLM, lambda: LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                        hidden_size=32, intermediate_size=64, max_position_embeddings=T,
                                                        pad_token_id=0, **common)),
        "neox": (GPTNeoXForCausalLM, lambda: GPTNeoXConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=32,
                                                           intermediate_size=64, max_position_embeddings=T, **common)),
    }[kind]
    cfg = config()
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    return cls(cfg).eval()


def reference_scores(model) -> dict[tuple, float]:
    """Previous-token, duplicate-token and prefix-matching "mul" scores (TransformerLens's
    ``detect_head`` definitions) from the model's own attention probabilities."""
    with torch.no_grad():
        attentions = model(TOKENS, output_attentions=True).attentions
    n, T_ = TOKENS.shape
    i, j = torch.meshgrid(torch.arange(T_), torch.arange(T_), indexing="ij")
    prev = (j == i - 1).float()
    same = TOKENS[:, :, None] == TOKENS[:, None, :]
    dup = (same & (j < i)).float()
    before = torch.zeros(n, T_, T_, dtype=torch.bool)
    before[:, :, 1:] = TOKENS[:, :, None] == TOKENS[:, None, :-1]
    prefix = (before & (j <= i)).float()
    out = {}
    for layer, a in enumerate(attentions):  # [batch, head, q, k]
        total = a.sum((-1, -2))
        for name, detection in (("previous_token", prev), ("duplicate_token", dup), ("prefix_matching", prefix)):
            d = detection if detection.ndim == 3 else detection.expand(n, T_, T_)
            per_seq = (a * d[:, None]).sum((-1, -2)) / total  # [batch, head]
            for h, v in enumerate(per_seq.mean(0).tolist()):
                out[(name, layer, h)] = v
    return out


def suite_scores(model, **kw) -> dict[tuple, float]:
    res = ProbeSuite([PreviousTokenAttention(), InductionProbe()]).run(model, TOKENS, **kw)
    out = {("previous_token", r.layer, r.head): r.value for r in res if r.probe == "previous_token" and r.metric == "score"}
    out.update({(r.metric, r.layer, r.head): r.value for r in res if r.probe == "induction"})
    return out


def assert_scores(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert abs(got[key] - want[key]) <= 1e-5, (key, got[key], want[key])


def explicit_bridge(model):
    """What a user would write by hand: TransformerLens's own builder on (a copy of) the model."""
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    twin = type(model)(model.config)
    twin.load_state_dict(model.state_dict())
    return build_bridge_from_module(twin.eval(), type(model).__name__, hf_config=twin.config)


def tiny_tokenizer():
    """A word-level tokenizer over the vocabulary, made in memory (LanguageModel wants one)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({f"t{i}": i for i in range(V)}, unk_token="t0")),
                                   unk_token="t0", pad_token="t0")


@pytest.mark.parametrize("kind", ["gpt2", "llama", "neox"])
def test_scores_equal_the_models_own_attention_probabilities_however_it_comes(kind):
    model = small(kind)
    want = reference_scores(model)
    assert_scores(suite_scores(model), want)
    assert_scores(suite_scores(explicit_bridge(model)), want)
    nnsight = pytest.importorskip("nnsight")
    assert_scores(suite_scores(nnsight.NNsight(model)), want)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = nnsight.LanguageModel(model, tokenizer=tiny_tokenizer())
    assert_scores(suite_scores(wrapped), want)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "neox"])
def test_a_model_loaded_with_sdpa_attention_is_probed_as_eager_and_left_untouched(kind):
    eager, sdpa = small(kind, "eager", seed=1), small(kind, "sdpa", seed=1)
    assert_scores(suite_scores(sdpa), reference_scores(eager))
    with torch.no_grad():
        assert sdpa(TOKENS, output_attentions=True).attentions == ()  # still sdpa: exposes no probabilities
        assert len(eager(TOKENS, output_attentions=True).attentions) == 2  # the probed model still answers
    assert type(eager.base_model).__module__.startswith("transformers.")


def test_the_probes_follow_the_model_as_it_trains():
    model = small("gpt2")
    before = suite_scores(model)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    model(TOKENS, labels=TOKENS).loss.backward()
    opt.step()
    model.eval()
    after = suite_scores(model)
    assert after != before
    assert_scores(after, reference_scores(model))


@pytest.mark.parametrize("planted", [planted_gpt2, planted_llama], ids=["gpt2", "llama"])
def test_the_suite_names_exactly_the_planted_heads(planted):
    for attn in ("eager", "sdpa"):
        model = planted(vocab=V, n_ctx=T, attn_implementation=attn)
        res = ProbeSuite([PreviousTokenAttention(), InductionProbe(period=T // 2)]).run(model, TOKENS)
        prev, induction = res.best("previous_token", "score"), res.best("induction", "repeat")
        assert (prev.layer, prev.head) == (0, 1) and prev.value > 0.9
        assert (induction.layer, induction.head) == (1, 0) and induction.value > 0.9
        others = [r.value for r in res.select("induction", "repeat") if (r.layer, r.head) != (1, 0)]
        assert max(others) < 0.1
    assert_scores(suite_scores(model), reference_scores(planted(vocab=V, n_ctx=T)))


def test_a_site_map_still_wins_over_the_bridge():
    model = small("gpt2")
    with pytest.raises(Exception, match="site_map"):
        ProbeSuite([ParentAttention([[]] + [[i] for i in range(T - 1)])]).run(model, TOKENS, site_map={"x": "transformer"})
