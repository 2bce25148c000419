"""Induction probes against TransformerLens's detection patterns and brute-force loops."""

import math

import pytest
import torch

from probes import GraphInductionProbe, InductionProbe, ModelDims, duplicate_token_pattern, induction_pattern
from probes import repeated_random_tokens
from probes.base import ProbeBatch

TOKENS = torch.randint(0, 4, (5, 11), generator=torch.Generator().manual_seed(0))  # small vocab: many repeats


def _random_pattern(b, h, t, seed):
    scores = torch.randn(b, h, t, t, generator=torch.Generator().manual_seed(seed)) * 3
    return scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf")).softmax(-1)


def test_token_patterns_equal_transformer_lens_detection_patterns():
    from transformer_lens import head_detector as hd

    dup, ind = duplicate_token_pattern(TOKENS), induction_pattern(TOKENS)
    for b in range(TOKENS.shape[0]):
        row = TOKENS[b : b + 1]
        assert torch.equal(dup[b], hd.get_duplicate_token_head_detection_pattern(row).float())
        assert torch.equal(ind[b], hd.get_induction_head_detection_pattern(row).float())


def test_induction_pattern_by_loops():
    ind = induction_pattern(TOKENS)
    for b, i, j in [(b, i, j) for b in range(5) for i in range(11) for j in range(11)]:
        want = 1.0 if 1 <= j <= i and TOKENS[b, j - 1] == TOKENS[b, i] else 0.0
        assert ind[b, i, j] == want


def test_repeat_stripe_by_loops():
    period = 5
    tokens = repeated_random_tokens(3, period, 7, torch.Generator().manual_seed(1), bos=0)
    assert tokens.shape == (3, 11) and torch.equal(tokens[:, 1:6], tokens[:, 6:])
    pattern = _random_pattern(3, 2, 11, seed=2)
    probe = InductionProbe(period=period)
    batch = ProbeBatch(tokens, {}, ModelDims(1, 2))
    probe.check(batch)
    got = {r.head: r.value for r in probe.compute({"blocks.0.attn.hook_pattern": pattern}, batch) if r.metric == "repeat"}
    for h in range(2):
        want = sum(float(pattern[b, h, i, i - period + 1]) for b in range(3) for i in range(6, 11)) / 15
        assert got[h] == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match="must repeat"):
        InductionProbe(period=4).check(batch)


def test_graph_induction_single_and_multi_parent_by_loops():
    t = 10
    tokens = torch.randint(0, 3, (6, t), generator=torch.Generator().manual_seed(3))
    pattern = _random_pattern(6, 2, t, seed=4)
    cases = {
        "chain, query token": ([[]] + [[i - 1] for i in range(1, t - 1)] + [[]], None),
        "two parents": ([[], [0], [0, 1], [1, 2], [1, 3], [2, 4], [2, 5], [3, 6], [3, 7], [4, 8]], [4, 9]),
    }
    for name, (parents, query_parents) in cases.items():
        probe = GraphInductionProbe(parents, query_parents)
        batch = ProbeBatch(tokens, {}, ModelDims(1, 2))
        records = probe.compute({"blocks.0.attn.hook_pattern": pattern}, batch)
        got = {(r.head, r.metric): r for r in records}
        qp = [t - 1] if query_parents is None else query_parents
        for h in range(2):
            masses, selfs, shares = [], [], []
            for b in range(6):
                want = [tokens[b, p] for p in qp]
                keys = [j for j in range(t) if len(parents[j]) == len(qp) and [tokens[b, p] for p in parents[j]] == want]
                if keys:
                    on_context = sum(float(pattern[b, h, t - 1, j]) for j in range(t - 1))
                    masses.append(sum(float(pattern[b, h, t - 1, j]) for j in keys))
                    selfs.append(float(pattern[b, h, t - 1, t - 1]))
                    shares.append(sum(float(pattern[b, h, t - 1, j]) for j in keys if j < t - 1) / on_context)
            assert got[h, "mass"].extra["n_sequences"] == len(masses), name
            assert got[h, "mass"].value == pytest.approx(sum(masses) / len(masses), abs=1e-6), name
            assert got[h, "self_mass"].value == pytest.approx(sum(selfs) / len(selfs), abs=1e-6), name
            assert got[h, "context_mass"].value == pytest.approx(sum(shares) / len(shares), abs=1e-5), name


def test_graph_induction_without_any_match_is_nan_and_bad_query_is_rejected():
    parents = [[], [0], [1]]
    tokens = torch.tensor([[0, 0, 1]])  # the only key (2) has parent token 0, the query token is 1
    probe = GraphInductionProbe(parents)
    rec = probe.compute({"blocks.0.attn.hook_pattern": _random_pattern(1, 1, 3, 0)}, ProbeBatch(tokens, {}, ModelDims(1)))
    assert all(math.isnan(r.value) and r.extra["n_sequences"] == 0 for r in rec)
    with pytest.raises(ValueError, match="query_parents"):
        GraphInductionProbe(parents, query_parents=[3])
