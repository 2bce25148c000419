"""Attention probes: brute-force references, TransformerLens head_detector, and planted heads."""

import pytest
import torch

from probes import (
    GraphInductionProbe,
    InductionProbe,
    ParentAttention,
    PreviousTokenAttention,
    ProbeSuite,
    chain_parents,
    repeated_random_tokens,
)
from probes.attention import parent_attention_records
from probes_helpers import (
    PLANTED,
    Config,
    TokenSeqModel,
    all_models,
    bridge,
    has_hooked_transformer,
    hooked_transformer,
    planted_weights,
    random_weights,
)

WEIGHTS = planted_weights()
T = 32  # detect_head needs seq_len < n_ctx (33)


def _random_pattern(b, h, t, seed):
    scores = torch.randn(b, h, t, t, generator=torch.Generator().manual_seed(seed)) * 3
    scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    return scores.softmax(-1)


def _by_key(records):
    return {(r.layer, r.head, r.metric): r for r in records}


def test_parent_attention_matches_loops_on_a_multi_parent_graph():
    t = 9
    parents = [[], [0], [0, 1], [1, 2], [1, 3], [2], [], [3, 5], [6]]
    pattern = _random_pattern(4, 3, t, seed=0)
    got = _by_key(parent_attention_records("p", 0, pattern, parents))
    for h in range(3):
        rows = [i for i in range(t) if parents[i]]
        mass = sum(float(pattern[b, h, i, p]) for b in range(4) for i in rows for p in parents[i]) / (4 * len(rows))
        acc = sum(int(pattern[b, h, i].argmax()) in parents[i] for b in range(4) for i in rows) / (4 * len(rows))
        score = sum(sum(float(pattern[b, h, i, p]) for i in rows for p in parents[i]) / t for b in range(4)) / 4
        assert got[(0, h, "mass")].value == pytest.approx(mass, abs=1e-6)
        assert got[(0, h, "argmax_acc")].value == pytest.approx(acc)
        assert got[(0, h, "score")].value == pytest.approx(score, abs=1e-6)
        per_pos = got[(0, h, "mass")].extra["per_position"]
        assert per_pos[0] is None and per_pos[6] is None
        assert per_pos[2] == pytest.approx(float(pattern[:, h, 2, [0, 1]].sum(-1).mean()), abs=1e-6)
        for r in (0, 1):  # the r-th listed parent, over positions that have one
            rows_r = [i for i in range(t) if len(parents[i]) > r]
            mass_r = sum(float(pattern[b, h, i, parents[i][r]]) for b in range(4) for i in rows_r) / (4 * len(rows_r))
            acc_r = sum(int(pattern[b, h, i].argmax()) == parents[i][r] for b in range(4) for i in rows_r) / (4 * len(rows_r))
            assert got[(0, h, f"mass_parent{r}")].value == pytest.approx(mass_r, abs=1e-6)
            assert got[(0, h, f"argmax_acc_parent{r}")].value == pytest.approx(acc_r)
    assert (0, 0, "mass_parent2") not in got


def _tokens():
    g = torch.Generator().manual_seed(0)
    repeated = repeated_random_tokens(4, T // 2, PLANTED.d_vocab, g)
    random = torch.randint(0, PLANTED.d_vocab, (4, T), generator=g)
    return torch.cat([repeated, random])


def _tl_models(cfg, weights):
    models = {"bridge": bridge(cfg, weights)}
    if has_hooked_transformer():
        models["hooked_transformer"] = hooked_transformer(cfg, weights)
    return models


RANDOM = Config(n_layers=2, n_heads=2, d_model=16, d_head=8, n_ctx=33, d_vocab=PLANTED.d_vocab)


@pytest.mark.parametrize("weights,exclude_bos,exclude_current_token",
                         [("planted", False, False), ("random", False, False), ("random", True, True)])
def test_scores_equal_transformer_lens_detect_head(weights, exclude_bos, exclude_current_token):
    from transformer_lens.head_detector import detect_head

    tokens = _tokens()
    # Random weights give every head a middling score; the planted ones give extremes.
    cfg, w = (PLANTED, WEIGHTS) if weights == "planted" else (RANDOM, random_weights(RANDOM, seed=2, std=1.0))
    for model in _tl_models(cfg, w).values():
        kw = dict(exclude_bos=exclude_bos, exclude_current_token=exclude_current_token)
        suite = ProbeSuite([PreviousTokenAttention(), InductionProbe(**kw)])
        got = _by_key(suite.run(model, tokens).records)
        wrapped = TokenSeqModel(model, tokens)
        for name, (probe, metric) in {
            "previous_token_head": ("previous_token", "score"),
            "duplicate_token_head": ("induction", "duplicate_token"),
            "induction_head": ("induction", "prefix_matching"),
        }.items():
            if probe == "previous_token" and (exclude_bos or exclude_current_token):
                continue  # the previous-token probe has no exclusions
            want = detect_head(wrapped, list(wrapped.seqs), name, error_measure="mul", **kw)
            mine = torch.tensor([[got[(l, h, metric)].value for h in range(2)] for l in range(2)])
            torch.testing.assert_close(mine, want.float(), atol=1e-5, rtol=0, msg=f"{type(model).__name__} {name}")


def test_suite_names_exactly_the_planted_heads():
    tokens = repeated_random_tokens(16, T // 2, PLANTED.d_vocab, torch.Generator().manual_seed(1))
    parents = chain_parents(T - 1) + [[]]  # the chain task: the last position is the query
    suite = ProbeSuite([PreviousTokenAttention(), InductionProbe(period=T // 2), GraphInductionProbe(parents),
                        ParentAttention(parents)])
    for kind, (model, site_map) in all_models(PLANTED, WEIGHTS).items():
        result = suite.run(model, tokens, site_map=site_map)
        named = {
            "previous_token": (result.best("previous_token", "mass"), (0, 1)),
            "parent_attention": (result.best("parent_attention", "argmax_acc"), (0, 1)),
            "repeat": (result.best("induction", "repeat"), (1, 0)),
            "prefix_matching": (result.best("induction", "prefix_matching"), (1, 0)),
            "graph_induction": (result.best("graph_induction", "mass"), (1, 0)),
        }
        for what, (best, head) in named.items():
            assert (best.layer, best.head) == head, (kind, what, best)
            others = [r.value for r in result.select(best.probe, best.metric) if (r.layer, r.head) != head]
            assert best.value > 0.5 and max(others) < 0.2, (kind, what, best.value, others)
