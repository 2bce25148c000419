"""Copying probes: a planted copier is decoded, a model without one is not; OV scores against numpy."""

import math

import numpy as np
import pytest
import torch

from probes import LinearCopyingProbe, OVCopyingProbe, ProbeSuite, chain_parents, copying_score, ov_circuits
from probes_helpers import PLANTED, Config, all_models, plain_model, planted_weights, random_weights

T = 24
PARENTS = chain_parents(T)
TOKENS = torch.randint(0, PLANTED.d_vocab, (64, T), generator=torch.Generator().manual_seed(0))


def _no_copy_weights():
    """The planted model with its previous-token head unable to write: nothing copies the parent."""
    w = planted_weights()
    w["blocks.0.attn.W_O"][1] = 0
    return w


@pytest.mark.parametrize("solver", ["ridge", "logistic"])
def test_linear_probe_decodes_the_parent_token_only_where_it_was_copied(solver):
    probe = LinearCopyingProbe(PARENTS, solver=solver, seed=0)
    copied, _ = plain_model(PLANTED, planted_weights())
    site_map = plain_model(PLANTED, planted_weights())[1]
    got = {(r.layer, r.metric): r for r in ProbeSuite([probe]).run(copied, TOKENS, site_map=site_map)}
    chance = 1 / PLANTED.d_vocab
    assert got[(0, "accuracy")].value > 0.95, got[(0, "accuracy")]
    assert got[(0, "control_accuracy")].value < chance + 0.1
    assert got[(0, "selectivity")].value == pytest.approx(got[(0, "accuracy")].value - got[(0, "control_accuracy")].value)
    n_test = round(0.25 * 64)
    assert got[(0, "accuracy")].extra == {"n_train": (64 - n_test) * (T - 1), "n_test": n_test * (T - 1)}

    blank, site_map = plain_model(PLANTED, _no_copy_weights())
    got = {(r.layer, r.metric): r.value for r in ProbeSuite([probe]).run(blank, TOKENS, site_map=site_map)}
    assert got[(0, "accuracy")] < chance + 0.1 and abs(got[(0, "selectivity")]) < 0.1, got


def test_linear_probe_on_multi_parent_graph_reports_each_slot():
    parents = [[]] + [[i - 1] for i in range(1, 3)] + [[i - 1, i - 3] for i in range(3, T)]
    model, site_map = plain_model(PLANTED, planted_weights())
    got = {(r.layer, r.metric): r.value for r in
           ProbeSuite([LinearCopyingProbe(parents, layers=[0], solver="ridge")]).run(model, TOKENS, site_map=site_map)}
    # The planted head copies the previous token (slot 0) and nothing about position i - 3 (slot 1).
    assert got[(0, "accuracy_parent0")] > 0.95
    assert got[(0, "accuracy_parent1")] < 1 / PLANTED.d_vocab + 0.1
    assert set(m for _, m in got) == {f"{m}_parent{r}" for m in ("accuracy", "control_accuracy", "selectivity") for r in (0, 1)}


def test_linear_probe_rejects_bad_settings():
    with pytest.raises(ValueError, match="solver"):
        LinearCopyingProbe(PARENTS, solver="svm")
    with pytest.raises(ValueError, match="no edges"):
        LinearCopyingProbe([[], []])
    model, site_map = plain_model(PLANTED, planted_weights())
    with pytest.raises(ValueError, match="at least 2 sequences"):
        ProbeSuite([LinearCopyingProbe(PARENTS)]).run(model, TOKENS[:1], site_map=site_map)
    with pytest.raises(ValueError, match="one parent list per position"):
        ProbeSuite([LinearCopyingProbe(PARENTS)]).run(model, TOKENS[:, :10], site_map=site_map)


def test_ov_copying_score_against_numpy_eigenvalues():
    cfg = Config(n_layers=2, n_heads=3, d_model=8, d_head=4, n_ctx=6, d_vocab=5)
    w = random_weights(cfg, seed=3)
    weights = {"W_E": w["embed.W_E"], "W_U": w["unembed.W_U"],
               "W_V": torch.stack([w[f"blocks.{l}.attn.W_V"] for l in range(2)]),
               "W_O": torch.stack([w[f"blocks.{l}.attn.W_O"] for l in range(2)])}
    model, site_map = plain_model(cfg, w)
    result = ProbeSuite([OVCopyingProbe(weights=lambda m: weights)]).run(model, torch.zeros(1, 3, dtype=torch.long), site_map=site_map)
    got = {(r.layer, r.head, r.metric): r.value for r in result}
    for l in range(2):
        for h in range(3):
            parts = [w["embed.W_E"], w[f"blocks.{l}.attn.W_V"][h], w[f"blocks.{l}.attn.W_O"][h], w["unembed.W_U"]]
            m = np.linalg.multi_dot([p.double().numpy() for p in parts])
            eig = np.linalg.eigvals(m)
            assert got[(l, h, "score")] == pytest.approx(eig.real.sum() / np.abs(eig).sum(), abs=1e-9)
            assert got[(l, h, "diag_fraction")] == pytest.approx(np.mean(m.argmax(1) == np.arange(5)))


def test_ov_copying_finds_the_planted_copier_on_tl_models():
    for kind, (model, site_map) in all_models(PLANTED, planted_weights()).items():
        if kind == "plain":
            with pytest.raises(ValueError, match="no \\['W_E', 'W_V', 'W_O', 'W_U'\\] attributes"):
                ProbeSuite([OVCopyingProbe()]).run(model, TOKENS[:1], site_map=site_map)
            continue
        got = {(r.layer, r.head, r.metric): r.value for r in ProbeSuite([OVCopyingProbe()]).run(model, TOKENS[:1])}
        assert got[(1, 0, "score")] == pytest.approx(1.0) and got[(1, 0, "diag_fraction")] == 1.0
        assert math.isnan(got[(0, 0, "score")])  # an all-zero head has no eigenvalues to speak of
        # L0H1 copies into a slot the unembedding does not read: its direct OV circuit is zero.
        assert math.isnan(got[(0, 1, "score")])


def test_copying_score_of_simple_matrices():
    assert float(copying_score(torch.eye(3))) == pytest.approx(1.0)
    assert float(copying_score(-torch.eye(3))) == pytest.approx(-1.0)
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # eigenvalues +-i: no copying either way
    assert float(copying_score(rot)) == pytest.approx(0.0, abs=1e-12)
    w = {"W_E": torch.eye(2), "W_V": torch.eye(2)[None, None], "W_O": 2 * torch.eye(2)[None, None], "W_U": torch.eye(2)}
    assert torch.equal(ov_circuits(w)[0, 0], 2 * torch.eye(2, dtype=torch.float64))


def test_both_solvers_in_one_suite_keep_their_records_apart():
    model, site_map = plain_model(PLANTED, planted_weights())
    suite = ProbeSuite([LinearCopyingProbe(PARENTS, layers=[0]), LinearCopyingProbe(PARENTS, layers=[0], solver="ridge")])
    result = suite.run(model, TOKENS[:16], site_map=site_map)
    assert {r.probe for r in result} == {"linear_copying", "linear_copying_ridge"}
    assert result.value("linear_copying", "accuracy", 0) > 0.9 and result.value("linear_copying_ridge", "accuracy", 0) > 0.9
