"""Gradient probe against float64 autograd written here, the disentangled dL/dA identity, and MI helpers."""

import math

import pytest
import torch

from probes import GradientProbe, ProbeSuite, chi2_mutual_information, compare_to_mi, score_bias_gradient
from probes.gradient import _gradient_through_values
from probes_helpers import Config, all_models, has_hooked_transformer, hooked_transformer, plain_model, random_weights
from probes_helpers import reference_forward

CFG = Config()
WEIGHTS = random_weights(CFG, seed=7)
T = 10
TOKENS = torch.randint(0, CFG.d_vocab, (5, T), generator=torch.Generator().manual_seed(8))
TARGETS = torch.softmax(2 * torch.randn(5, CFG.d_vocab, generator=torch.Generator().manual_seed(9)), -1)


def _reference_gradient(cfg, weights, tokens, targets):
    """dL/dB by float64 autograd through the plain forward pass of probes_helpers."""
    w = {k: v.double() for k, v in weights.items()}
    bias = torch.zeros(cfg.n_heads, tokens.shape[1], tokens.shape[1], dtype=torch.float64, requires_grad=True)
    logits, _ = reference_forward(cfg, w, tokens, bias=bias)
    loss = -(targets.double() * logits[:, -1].log_softmax(-1)).sum(-1).mean()
    return torch.autograd.grad(loss, bias)[0]


def test_gradient_equals_autograd_on_every_kind_of_model():
    want = _reference_gradient(CFG, WEIGHTS, TOKENS, TARGETS)
    assert want.abs().max() > 1e-2  # a gradient worth comparing
    for kind, (model, site_map) in all_models(CFG, WEIGHTS).items():
        got = score_bias_gradient(model, TOKENS, TARGETS, layer=0, site_map=site_map)
        assert got.shape == (CFG.n_heads, T, T)
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-4, msg=kind)
        assert all(p.grad is None for p in model.parameters()), f"{kind}: parameter .grad was touched"


def test_gradient_through_values_equals_autograd_where_scores_are_editable():
    # The route the bridge takes, checked on models where the direct route also exists.
    want = _reference_gradient(CFG, WEIGHTS, TOKENS, TARGETS)
    models = [plain_model(CFG, WEIGHTS)]
    if has_hooked_transformer():
        models.append((hooked_transformer(CFG, WEIGHTS), None))
    for model, site_map in models:
        got = _gradient_through_values(model, TOKENS, TARGETS, 0, site_map)
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-4)


def _disentangled_weights(cfg, seed):
    """Layer 0 attends by position only: its score is A[q, k] for a random A (one A per head)."""
    w = random_weights(cfg, seed=seed)
    n = cfg.n_ctx
    pos = cfg.d_vocab  # the position one-hot block starts after the token block
    g = torch.Generator().manual_seed(seed + 1)
    w["embed.W_E"].zero_()[:, : cfg.d_vocab] = torch.eye(cfg.d_vocab)
    w["pos_embed.W_pos"].zero_()[:, pos : pos + n] = torch.eye(n)
    a = torch.randn(cfg.n_heads, n, n, generator=g)
    for h in range(cfg.n_heads):
        w["blocks.0.attn.W_Q"][h].zero_()[pos : pos + n, :n] = cfg.scale * torch.eye(n)
        w["blocks.0.attn.W_K"][h].zero_()[pos : pos + n, :n] = a[h].T  # q_i . k_j / scale = A[i, j]
    w["blocks.0.attn.b_Q"].zero_()
    w["blocks.0.attn.b_K"].zero_()
    return w, a


def test_disentangled_model_gradient_is_dL_dA_on_the_position_block():
    cfg = Config(n_layers=2, n_heads=2, d_model=6 + 12 + 10, d_head=12, n_ctx=12, d_vocab=6)
    w, a = _disentangled_weights(cfg, seed=11)
    tokens = torch.randint(0, 6, (7, 12), generator=torch.Generator().manual_seed(12))
    targets = torch.softmax(torch.randn(7, 6, generator=torch.Generator().manual_seed(13)), -1)
    models = [plain_model(cfg, w)]
    if has_hooked_transformer():
        models.append((hooked_transformer(cfg, w), None))
    for model, site_map in models:
        w_k = model.blocks[0].attn.W_K if site_map is None else model.w["blocks__0__attn__W_K"]
        loss = -(targets * model(tokens)[:, -1].log_softmax(-1)).sum(-1).mean()
        (grad_wk,) = torch.autograd.grad(loss, w_k)
        d_loss_d_a = grad_wk[:, cfg.d_vocab : cfg.d_vocab + 12, :12].transpose(1, 2)  # W_K block = A^T
        got = score_bias_gradient(model, tokens, targets, layer=0, site_map=site_map)
        torch.testing.assert_close(got, d_loss_d_a, atol=1e-6, rtol=1e-4)


def test_compare_to_mi_against_scipy_and_loops():
    from scipy.stats import spearmanr

    t, h = 8, 3
    g = torch.Generator().manual_seed(14)
    grad = torch.randn(h, t, t, generator=g).round(decimals=1)  # rounding makes ties
    mi = torch.randn(t, t, generator=g).round(decimals=1)
    parents = [[], [0], [0], [1], [], [2, 3], [4], [6]]
    for include_diagonal in (False, True):
        got = compare_to_mi(grad, mi, parents, include_diagonal)
        for head in range(h):
            agree, rhos = [], []
            for i, ps in enumerate(parents):
                n = i + 1 if include_diagonal else i
                if not ps or n < 1:
                    continue
                s, m = (-grad[head, i, :n]).tolist(), mi[i, :n].tolist()
                agree.append(max(range(n), key=lambda j: (s[j], -j)) == max(range(n), key=lambda j: (m[j], -j)))
                if n >= 2 and len(set(s)) > 1 and len(set(m)) > 1:
                    rhos.append(spearmanr(s, m).statistic)
            assert float(got["argmax_agreement"][head]) == pytest.approx(sum(agree) / len(agree))
            assert float(got["spearman"][head]) == pytest.approx(sum(rhos) / len(rhos), abs=1e-9)


def test_chi2_mutual_information_by_counting():
    tokens = torch.randint(0, 3, (400, 4), generator=torch.Generator().manual_seed(15))
    tokens[:, 2] = tokens[:, 0]  # position 2 copies position 0: maximal dependence
    got = chi2_mutual_information(tokens, 3)
    n = len(tokens)
    for i in range(4):
        for j in range(4):
            total = 0.0
            for a in range(3):
                for b in range(3):
                    pab = ((tokens[:, i] == a) & (tokens[:, j] == b)).sum().item() / n
                    pa, pb = (tokens[:, i] == a).sum().item() / n, (tokens[:, j] == b).sum().item() / n
                    total += pab**2 / (pa * pb) if pa * pb > 0 else 0.0
            assert float(got[i, j]) == pytest.approx(total - 1, abs=1e-5)
    assert got[2, 0] == pytest.approx(2.0, abs=1e-5) and got[1, 0] < 0.1


def test_gradient_probe_records_and_context_checks():
    want = _reference_gradient(CFG, WEIGHTS, TOKENS, TARGETS).float()
    parents = [[]] + [[i - 1] for i in range(1, T)]
    model, site_map = plain_model(CFG, WEIGHTS)
    model.train()
    result = ProbeSuite([GradientProbe(parents, mi=-want[1])]).run(model, TOKENS, site_map=site_map, targets=TARGETS)
    got = {(r.head, r.metric): r for r in result}
    assert got[(1, "argmax_agreement")].value == 1.0 and got[(1, "spearman")].value == pytest.approx(1.0)
    assert got[(0, "spearman")].value < 0.99
    torch.testing.assert_close(torch.tensor(got[(0, "gradient_norm")].extra["gradient"]), want[0], atol=1e-5, rtol=1e-4)
    assert got[(0, "gradient_norm")].value == pytest.approx(float(want[0].norm()), rel=1e-4)
    assert model.training and all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="needs 'targets'"):
        ProbeSuite([GradientProbe(parents)]).run(model, TOKENS, site_map=site_map)
    with pytest.raises(ValueError, match=r"mi: expected shape \[10, 10\]"):
        GradientProbe(parents, mi=torch.zeros(3, 3))
    only_grad = ProbeSuite([GradientProbe(parents)]).run(model, TOKENS, site_map=site_map, targets=TARGETS)
    assert {r.metric for r in only_grad} == {"gradient_norm"}
    assert not math.isnan(only_grad.records[0].value)


def test_chi2_mutual_information_averages_over_groups():
    g = torch.Generator().manual_seed(16)
    groups = torch.randint(0, 3, (4, 50, 5), generator=g)
    groups[1, :, 3] = groups[1, :, 1]  # dependence in one group only
    want = torch.stack([chi2_mutual_information(groups[k], 3) for k in range(4)]).mean(0)
    torch.testing.assert_close(chi2_mutual_information(groups, 3), want)
    pooled = chi2_mutual_information(groups.reshape(200, 5), 3)
    assert not torch.allclose(pooled, want)
    with pytest.raises(ValueError, match=r"tokens: expected \[n, T\] or \[groups, n, T\]"):
        chi2_mutual_information(groups[0, 0], 3)
