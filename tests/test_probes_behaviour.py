"""Behaviour probes against formulas written out here."""

import math

import pytest
import torch

from probes import BehaviourProbe, ICLScore, ProbeSuite, strategy_predictions
from probes_helpers import Config, plain_model, random_weights

CFG = Config(d_vocab=5)
MODEL, SITE_MAP = plain_model(CFG, random_weights(CFG, seed=4))
TOKENS = torch.randint(0, 5, (6, 12), generator=torch.Generator().manual_seed(5))


def _bayes_chain(tokens, vocab, alpha):
    """docs/science.md's Dirichlet-posterior estimator for the chain graph with the query at the last position."""
    out = []
    for seq in tokens.tolist():
        q, ctx = seq[-1], seq[:-1]
        counts = [sum(1 for i in range(1, len(ctx)) if ctx[i - 1] == q and ctx[i] == s) for s in range(vocab)]
        n = sum(counts)
        out.append([(c + alpha) / (n + vocab * alpha) for c in counts])
    return torch.tensor(out)


def test_strategies_by_counting():
    alpha = 0.3
    got = strategy_predictions(TOKENS, 5, alpha)
    torch.testing.assert_close(got["bigram"], _bayes_chain(TOKENS, 5, alpha))
    for b, seq in enumerate(TOKENS.tolist()):
        ctx = seq[:-1]
        want = [(ctx.count(s) + alpha) / (len(ctx) + 5 * alpha) for s in range(5)]
        torch.testing.assert_close(got["unigram"][b], torch.tensor(want))
    torch.testing.assert_close(got["uniform"], torch.full((6, 5), 0.2))


def test_kl_and_loss_against_the_model_output():
    reference = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(6)), -1)
    reference[0] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])  # zeros in the reference must not give NaN
    got = {r.metric: r.value for r in ProbeSuite([BehaviourProbe(alpha=0.1)]).run(MODEL, TOKENS, site_map=SITE_MAP, reference=reference)}
    with torch.no_grad():
        q = MODEL(TOKENS)[:, -1].double().softmax(-1)
    strategies = {**strategy_predictions(TOKENS, 5, 0.1), "reference": reference}
    for name, p in strategies.items():
        kl = sum(p[b, v].item() * math.log(p[b, v].item() / q[b, v].item())
                 for b in range(6) for v in range(5) if p[b, v] > 0) / 6
        assert got[f"kl_to_{name}"] == pytest.approx(kl, rel=1e-4), name
    loss = -sum(reference[b, v].item() * math.log(q[b, v].item()) for b in range(6) for v in range(5)) / 6
    assert got["loss"] == pytest.approx(loss, rel=1e-4)


def test_without_reference_only_strategies_are_reported_and_bad_reference_is_rejected():
    got = {r.metric for r in ProbeSuite([BehaviourProbe()]).run(MODEL, TOKENS, site_map=SITE_MAP)}
    assert got == {"kl_to_uniform", "kl_to_unigram", "kl_to_bigram"}
    with pytest.raises(ValueError, match=r"reference: expected shape \[6, vocab\]"):
        ProbeSuite([BehaviourProbe()]).run(MODEL, TOKENS, site_map=SITE_MAP, reference=torch.ones(5, 5) / 5)
    with pytest.raises(ValueError, match="reference: every row must be a probability distribution"):
        ProbeSuite([BehaviourProbe()]).run(MODEL, TOKENS, site_map=SITE_MAP, reference=torch.ones(6, 5))


def test_icl_score_is_late_minus_early_next_token_loss():
    got = {r.metric: r for r in ProbeSuite([ICLScore(early=2, late=9)]).run(MODEL, TOKENS, site_map=SITE_MAP)}
    with torch.no_grad():
        logits = MODEL(TOKENS)
    nll = torch.stack([torch.nn.functional.cross_entropy(logits[:, t], TOKENS[:, t + 1]) for t in range(11)])
    assert got["early_loss"].value == pytest.approx(float(nll[2]), rel=1e-5)
    assert got["late_loss"].value == pytest.approx(float(nll[9]), rel=1e-5)
    assert got["score"].value == pytest.approx(float(nll[9] - nll[2]), rel=1e-4, abs=1e-6)
    assert got["score"].extra["per_position"] == pytest.approx(nll.tolist(), rel=1e-5)
    with pytest.raises(ValueError, match="early, late"):
        ProbeSuite([ICLScore(early=9, late=2)]).run(MODEL, TOKENS, site_map=SITE_MAP)
