"""Streaming and chunking: a long batch in chunks gives the unchunked records, and bad input is
refused before any forward pass."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch

from probes import (
    BehaviourProbe,
    GraphInductionProbe,
    ICLScore,
    InductionProbe,
    LinearCopyingProbe,
    MissingSiteError,
    ParentAttention,
    PreviousTokenAttention,
    ProbeSuite,
    chain_parents,
    repeated_random_tokens,
)
from probes_helpers import Config, all_models, random_weights

CFG = Config(n_ctx=24)
WEIGHTS = random_weights(CFG, seed=5)
T = 20
PARENTS = chain_parents(T - 1) + [[]]
TOKENS = repeated_random_tokens(64, T // 2, CFG.d_vocab, torch.Generator().manual_seed(6))
REFERENCE = torch.softmax(torch.randn(64, CFG.d_vocab, generator=torch.Generator().manual_seed(7)), -1)


def suite() -> ProbeSuite:
    return ProbeSuite([ParentAttention(PARENTS), PreviousTokenAttention(), InductionProbe(period=T // 2),
                       GraphInductionProbe(PARENTS), BehaviourProbe(), ICLScore(),
                       LinearCopyingProbe(PARENTS, solver="ridge")])


@pytest.fixture(scope="module")
def models():
    return all_models(CFG, WEIGHTS)


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b  # ints, None, strings: identical


@pytest.mark.parametrize("kind", ["hooked_transformer", "bridge", "plain"])
def test_chunks_of_7_give_the_records_of_the_whole_batch_of_64(models, kind):
    if kind not in models:
        pytest.skip(f"{kind} needs TransformerLens 3")
    model, site_map = models[kind]
    whole = suite().run(model, TOKENS, site_map=site_map, batch_size=64, reference=REFERENCE).to_dicts()
    chunked = suite().run(model, TOKENS, site_map=site_map, batch_size=7, reference=REFERENCE).to_dicts()
    assert len(whole) == len(chunked) == 62  # 2 layers x 2 heads: 12 + 12 + 12 + 12, copying 6, behaviour 5, icl 3
    for a, b in zip(whole, chunked):
        assert a.keys() == b.keys()
        for key in a:
            assert _close(a[key], b[key]), (a["probe"], a["layer"], a["head"], a["metric"], key, a[key], b[key])


def test_streaming_probes_never_hold_two_layers_of_patterns(models):
    """Every pattern is reduced when produced: no earlier layer's pattern is alive when the next
    arrives (on the bridge, whose forward itself keeps none)."""
    model, site_map = models["bridge"]
    alive = []
    seen = []

    class Spy(PreviousTokenAttention):
        def stats(self, site, act, chunk):
            gc.collect()
            alive.append(sum(1 for t in seen if t() is not None))
            seen.append(weakref.ref(act))
            return super().stats(site, act, chunk)

    ProbeSuite([Spy()]).run(model, TOKENS, site_map=site_map, batch_size=64)
    assert len(alive) == CFG.n_layers and max(alive) == 0


def test_bad_tokens_are_refused_before_any_forward_pass(models):
    model, site_map = models["bridge"]
    calls = []
    handle = model.register_forward_pre_hook(lambda m, args: calls.append(1))
    try:
        s = ProbeSuite([PreviousTokenAttention()])
        with pytest.raises(ValueError, match=f"tokens: ids must be < the model's vocabulary size {CFG.d_vocab}, got max 99"):
            s.run(model, torch.full((2, 5), 99))
        with pytest.raises(ValueError, match=r"tokens: sequences of length 30 exceed the model's context of 24 positions"):
            s.run(model, torch.zeros(2, 30, dtype=torch.long))
        with pytest.raises(TypeError, match="tokens: expected integer token ids, got dtype torch.float32"):
            s.run(model, torch.zeros(2, 5))
        with pytest.raises(ValueError, match=r"tokens: expected shape \[batch, pos\] with batch, pos >= 1, got \(2, 5, 1\)"):
            s.run(model, torch.zeros(2, 5, 1, dtype=torch.long))
        with pytest.raises(ValueError, match="batch_size: expected None"):
            s.run(model, torch.zeros(2, 5, dtype=torch.long), batch_size=0)
    finally:
        handle.remove()
    plain, _ = models["plain"]
    with pytest.raises(ValueError, match="model: cannot tell how many layers PlainModel has"):
        ProbeSuite([PreviousTokenAttention()]).run(plain, TOKENS)
    with pytest.raises(MissingSiteError, match="PlainModel offers no site 'blocks.0.attn.hook_pattern'"):
        ProbeSuite([PreviousTokenAttention()]).run(plain, TOKENS, site_map={"blocks.0.hook_resid_post": "taps.z0"})
    assert calls == []
