"""The fast sampler (``InContextTask.sample``) against the literal one
(``sample_from_tables(draw_tables(n))``): what its docstring promises is checked here.

- Single-parent graphs: the same distribution of ``(tokens, target)``: token statistics, the
  expected loss and the expected gradient of fixed predictors, target statistics.
- Other graphs (Polya urn): the same token distribution; the target is the posterior mean of the
  true row, i.e. the Bayes estimator, so expected losses and expected gradients of any predictor
  agree with the literal sampler's within Monte-Carlo error.
- Its pieces: the log-space gamma sampler and the GTH stationary distribution.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from interp_causal.tasks import CausalGraph, InContextTask, bayes, one_parent, unigram, uniform
from interp_causal.tasks.task import _log_gamma, _stationary_gth, parent_tokens, stationary

Z = 5.0  # tolerance in standard errors


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact_batch(task: InContextTask, n: int, seed: int):
    g = gen(seed)
    return task.sample_from_tables(task.draw_tables(n, g), g)


# ---------------------------------------------------------------------------------------------
# the pieces
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.1, 0.5, 2.0])
def test_log_gamma_draws_follow_the_gamma_distribution(alpha):
    n = 200_000
    logs = _log_gamma(n, alpha, gen(1)).double()
    if alpha < 1:  # the sampler drops the constant log(1 + alpha) - 1
        logs = logs + math.log1p(alpha) - 1.0
    for q in (1e-6, 1e-3, 0.02, 0.1, 0.5, 1.0, 3.0):
        want = float(torch.special.gammainc(torch.tensor(alpha, dtype=torch.float64), torch.tensor(q, dtype=torch.float64)))
        got = float((logs <= math.log(q)).double().mean())
        se = math.sqrt(max(want * (1 - want), 1e-12) / n)
        assert abs(got - want) < Z * se + 1e-6, (q, got, want)


def test_log_gamma_is_seeded():
    assert torch.equal(_log_gamma(1000, 0.1, gen(3)), _log_gamma(1000, 0.1, gen(3)))
    assert not torch.equal(_log_gamma(1000, 0.1, gen(3)), _log_gamma(1000, 0.1, gen(4)))


def test_gth_stationary_distribution():
    n, S = 2000, 10
    g = gen(5)
    rates = torch._standard_gamma(torch.full((n, S, S), 0.1, dtype=torch.float64), generator=g)
    pi = rates / rates.sum(-1, keepdim=True)
    mu = _stationary_gth(rates.clone(), rates.sum(-1))
    assert torch.allclose(mu.sum(-1), torch.ones(n, dtype=torch.float64))
    assert (mu >= 0).all()
    residual = (torch.einsum("bs,bst->bt", mu, pi) - mu).abs().sum(-1)
    assert residual.max() < 1e-10, residual.max()
    # agrees with the linear solve where the solve is well conditioned
    ref = stationary(pi)
    ok = (torch.einsum("bs,bst->bt", ref, pi) - ref).abs().sum(-1) < 1e-12
    assert ok.float().mean() > 0.9
    assert torch.allclose(mu[ok], ref[ok], atol=1e-8)


# ---------------------------------------------------------------------------------------------
# distribution checks against the literal sampler
# ---------------------------------------------------------------------------------------------
def mean_and_se(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    return x.mean(0), x.std(0) / math.sqrt(x.shape[0])


def assert_means_agree(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """Per-sample values ``[n, ...]`` from two samplers have the same expectation (every entry),
    within ``Z`` standard errors (plus float rounding, for constants such as the uniform loss)."""
    ma, sa = mean_and_se(a)
    mb, sb = mean_and_se(b)
    z = ((ma - mb).abs() - 1e-6).clamp_min(0) / (sa**2 + sb**2).sqrt().clamp_min(1e-12)
    assert float(z.max()) < Z, (what, float(z.max()), ma, mb)


class FixedModel:
    """A fixed softmax predictor of the tokens: ``f = softmax(M onehot(s_last) + N hist(tokens))``,
    whose per-sample loss gradient in ``(M, N)`` is ``(f - y) features^T``."""

    def __init__(self, S: int, seed: int):
        g = gen(seed)
        self.M = torch.randn(S, S, generator=g, dtype=torch.float64)
        self.N = 0.3 * torch.randn(S, S, generator=g, dtype=torch.float64)
        self.S = S

    def features(self, tokens):
        last = torch.nn.functional.one_hot(tokens[:, -1], self.S).double()
        hist = torch.nn.functional.one_hot(tokens, self.S).double().mean(1)
        return last, hist

    def loss_and_grad(self, tokens, target):
        last, hist = self.features(tokens)
        f = (last @ self.M.T + hist @ self.N.T).softmax(-1)
        y = target.double()
        loss = -(y * f.log()).sum(-1)
        dz = f - y  # [n, S]
        grad = torch.cat([(dz[:, :, None] * last[:, None, :]).flatten(1), (dz[:, :, None] * hist[:, None, :]).flatten(1)], 1)
        return loss, grad


def per_sample_loss(target, pred):
    return -(target.double() * pred.double().clamp_min(1e-12).log()).sum(-1)


def compare(task: InContextTask, n: int, predictors: dict) -> None:
    S, T = task.vocab_size, task.seq_len
    slow = exact_batch(task, n, seed=100)
    fast = task.sample(n, gen(200))
    assert fast.tokens.shape == (n, T) and fast.target.shape == (n, S)
    assert fast.tokens.min() >= 0 and fast.tokens.max() < S
    assert torch.allclose(fast.target.sum(-1), torch.ones(n), atol=1e-5) and (fast.target >= 0).all()
    # tokens: every position's marginal, and "same token as the previous position"
    oh = lambda b: torch.nn.functional.one_hot(b.tokens, S).flatten(1)  # noqa: E731
    assert_means_agree(oh(slow), oh(fast), "token marginals")
    same = lambda b: (b.tokens[:, 1:] == b.tokens[:, :-1])  # noqa: E731
    assert_means_agree(same(slow), same(fast), "repeats")
    # expected loss of fixed predictors, and of a fixed softmax model with its expected gradient
    for name, f in predictors.items():
        assert_means_agree(per_sample_loss(slow.target, f(slow.tokens, task)), per_sample_loss(fast.target, f(fast.tokens, task)), name)
    model = FixedModel(S, seed=7)
    (l_slow, g_slow), (l_fast, g_fast) = model.loss_and_grad(slow.tokens, slow.target), model.loss_and_grad(fast.tokens, fast.target)
    assert_means_agree(l_slow, l_fast, "fixed model loss")
    assert_means_agree(g_slow, g_fast, "fixed model gradient")
    return slow, fast


BASE = {"bayes": bayes, "unigram": unigram, "uniform": uniform}


@pytest.fixture(params=["c", "torch"])
def single_parent_path(request, monkeypatch):
    """Single-parent graphs are drawn by tasks/sampler.c where it is built, from its own stream,
    else by the torch ops: each must have the literal sampler's distribution."""
    from interp_causal import compiled
    from interp_causal.tasks.task import sampler_library

    if request.param == "c" and shutil.which("cc") is None:
        pytest.skip("no C compiler to build tasks/sampler.c")
    monkeypatch.setenv(compiled.ENV_SWITCH, "1" if request.param == "c" else "0")
    assert (sampler_library() is not None) == (request.param == "c")
    return request.param


@pytest.mark.parametrize(
    "graph",
    [CausalGraph.chain(12), CausalGraph.icl(11), CausalGraph.random_tree(12, gen(3)), CausalGraph.random_tree(12, gen(4), version=2)],
    ids=["chain", "icl", "random-v1", "random-v2"],
)
def test_single_parent_fast_sampler_has_the_exact_distribution(graph, single_parent_path):
    task = InContextTask(graph, vocab_size=5, alpha=0.1)
    slow, fast = compare(task, 40_000, BASE)
    # the target itself: its concentration and its weight on the query's own token
    conc = lambda b: (b.target.double() ** 2).sum(-1)  # noqa: E731
    assert_means_agree(conc(slow), conc(fast), "target concentration")
    q = graph.target_parents[0]
    self_w = lambda b: b.target.gather(1, b.tokens[:, q : q + 1]).squeeze(1)  # noqa: E731
    assert_means_agree(self_w(slow), self_w(fast), "target self-transition")


def test_single_parent_without_a_query_and_alpha_above_one(single_parent_path):
    parents = [[], [0], [1], [1], [3], [2], [5]]
    task = InContextTask(CausalGraph.from_parents(parents, target_parents=[6]), vocab_size=4, alpha=1.5)
    assert task.graph.query_position is None
    compare(task, 30_000, BASE)


@pytest.mark.parametrize(
    "graph",
    [CausalGraph.two_parent(12), CausalGraph.markov(10, 2),
     CausalGraph.from_parents([[], [0], [0, 1], [1], [2, 3], [3, 1], [5], []])],
    ids=["two-parent", "markov-2", "mixed-degrees-query"],
)  # fmt: skip
def test_urn_sampler_preserves_tokens_and_expected_losses(graph):
    task = InContextTask(graph, vocab_size=3, alpha=0.1)
    predictors = dict(BASE)
    if len(graph.target_parents) > 1:
        predictors["one_parent"] = one_parent
    slow, fast = compare(task, 40_000, predictors)
    # the soft target is the posterior mean of the true row: the Bayes estimator itself
    assert torch.allclose(fast.target, bayes(fast.tokens, task), atol=1e-6)


def test_paper_chain_bayes_loss_and_baselines(single_parent_path):
    task = InContextTask(CausalGraph.chain(20), vocab_size=10, alpha=0.1)
    compare(task, 30_000, BASE)


# ---------------------------------------------------------------------------------------------
# seeding and chunking
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("graph", [CausalGraph.chain(9), CausalGraph.random_tree(9, gen(1)), CausalGraph.two_parent(9)])
def test_seeded(graph, single_parent_path):
    task = InContextTask(graph, vocab_size=4)
    a, b, c = task.sample(300, gen(1)), task.sample(300, gen(1)), task.sample(300, gen(2))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.target, b.target)
    assert torch.equal(a.parent_tokens, b.parent_tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_many_chunks(single_parent_path):
    task = InContextTask(CausalGraph.chain(20), vocab_size=10)
    batch = task.sample(12_345, gen(0))  # several chunks of the S = 10 sampler
    assert batch.tokens.shape == (12_345, 20) and batch.target.shape == (12_345, 10)
    # chunks are independent draws, not copies: as many distinct sequences as the literal sampler
    # gives (alpha = 0.1 chains often repeat one token, so some sequences recur)
    distinct = len(batch.tokens.unique(dim=0))
    assert abs(distinct - len(exact_batch(task, 12_345, 1).tokens.unique(dim=0))) < 150, distinct
    assert torch.allclose(batch.target.sum(-1), torch.ones(12_345), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the samplers in C (tasks/sampler.c) against their torch ops
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to build tasks/sampler.c")
@pytest.mark.parametrize("graph, S, alpha", [
    (CausalGraph.two_parent(32), 5, 0.1),  # the paper's multi-parent task
    (CausalGraph.two_parent(12), 10, 0.1),
    (CausalGraph.markov(10, 2), 3, 0.1),
    (CausalGraph.from_parents([[], [0], [0, 1], [1], [2, 3], [3, 1], [5], [6, 4, 2], []]), 4, 0.1),  # degrees 1-3
], ids=["paper-urn", "urn-S10", "markov-2", "mixed-degrees-query"])
def test_urn_draws_in_c_equal_the_torch_ops_bit_for_bit(graph, S, alpha, monkeypatch):
    from interp_causal import compiled
    from interp_causal.tasks.task import sampler_library

    task = InContextTask(graph, vocab_size=S, alpha=alpha)
    assert sampler_library() is not None
    batches = {}
    for native in ("1", "0"):
        monkeypatch.setenv(compiled.ENV_SWITCH, native)
        g = gen(11)
        batches[native] = [task.sample(n, g) for n in (1, 777, 20_000)]  # the generator's state carries on
    assert sampler_library() is None  # the switch was off for the second run
    for ours, theirs in zip(batches["1"], batches["0"]):
        assert torch.equal(ours.tokens, theirs.tokens)
        assert torch.equal(ours.target, theirs.target)
        assert torch.equal(ours.parent_tokens, theirs.parent_tokens)


SINGLE_PARENT = [
    (CausalGraph.chain(20), 10, 0.1),  # the paper's chain
    (CausalGraph.by_name("icl", 20, gen(0)), 10, 0.1),  # many roots
    (CausalGraph.random_tree(20, gen(1), version=2), 3, 0.1),  # Fig. 9's trees
    (CausalGraph.from_parents([[], [0], [1], [0], []], target_parents=[3]), 4, 2.0),  # no query; alpha > 1
]
SINGLE_PARENT_IDS = ["chain", "icl", "tree", "no-query"]


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to build tasks/sampler.c")
@pytest.mark.parametrize("graph, S, alpha", SINGLE_PARENT, ids=SINGLE_PARENT_IDS)
def test_single_parent_in_c_does_not_depend_on_threads(graph, S, alpha):
    """Each sequence has its own stream: any split over threads gives the same batch."""
    task = InContextTask(graph, vocab_size=S, alpha=alpha)
    threads = torch.get_num_threads()
    batches = []
    try:
        for k in (1, 2, 3):
            torch.set_num_threads(k)
            batches.append(task.sample(2001, gen(11)))
    finally:
        torch.set_num_threads(threads)
    for b in batches[1:]:
        assert torch.equal(b.tokens, batches[0].tokens) and torch.equal(b.target, batches[0].target)


@pytest.mark.parametrize("S, alpha", [(10, 0.1), (4, 2.0), (3, 1.0)])
def test_target_rows_are_dirichlet(S, alpha, single_parent_path):
    """The query is uniform and drawn apart from the table, so the target, pi(. | query), is one
    Dirichlet(alpha) row: each entry Beta(alpha, (S - 1) alpha), checked at quantiles from 1e-8
    (the gamma draws' lower tail, where alpha = 0.1 puts much of its mass) to 0.9."""
    from scipy.stats import beta

    n = 60_000
    target = InContextTask(CausalGraph.chain(6), vocab_size=S, alpha=alpha).sample(n, gen(21)).target.double()
    for q in (1e-8, 1e-4, 0.01, 0.1, 0.5, 0.9):
        want = float(beta.cdf(q, alpha, (S - 1) * alpha))
        got = (target <= q).double().mean(0)  # [S], every entry
        se = math.sqrt(max(want * (1 - want), 1e-12) / n)
        assert float((got - want).abs().max()) < Z * se + 1e-6, (q, got, want)


def test_parent_tokens_against_a_loop():
    graph = CausalGraph.from_parents([[], [0], [0, 1], [1], [2, 3], [3, 1], [5], [6, 4, 2], []])
    tokens = torch.randint(0, 4, (50, graph.seq_len), generator=gen(12))
    got = parent_tokens(tokens, graph)
    k = max(len(ps) for ps in graph.parents)
    for b in range(50):
        for i, ps in enumerate(graph.parents):
            want = [int(tokens[b, p]) for p in ps] + [-1] * (k - len(ps))
            assert got[b, i].tolist() == want
