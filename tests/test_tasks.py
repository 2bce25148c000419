"""Tests of the task layer: causal graphs, the sampler, the Bayes estimator and the baselines.

Every expected value is computed independently in this file: parent lists written out by hand,
stationary distributions by numpy matrix powers, estimators by explicit Python loops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interp_causal.tasks import (
    CausalGraph,
    InContextTask,
    baseline_losses,
    bayes,
    count_softmax_floor,
    one_parent,
    uniform,
    unigram,
)


# ---------------------------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------------------------
def stationary_by_power(pi: np.ndarray) -> np.ndarray:
    """Stationary distribution of an irreducible aperiodic stochastic matrix by matrix power."""
    m = np.linalg.matrix_power(pi.astype(np.float64), 4096)
    mu = m[0] / m[0].sum()
    # sanity of the reference itself: every row converged to the same vector and mu pi = mu
    assert np.allclose(m, mu[None, :], atol=1e-10)
    assert np.allclose(mu @ pi, mu, atol=1e-12)
    return mu


def brute_bayes(tokens, parents, target_parents, S, alpha):
    """Dirichlet-posterior count estimator by explicit loops over sequences and positions.

    Counts position i only if it has exactly as many parents as the target and its parents'
    tokens (in order) equal the target's parents' tokens. Roots (no parents) never count.
    """
    rows = []
    k = len(target_parents)
    for seq in tokens.tolist():
        query = tuple(seq[p] for p in target_parents)
        counts = [0.0] * S
        for i, ps in enumerate(parents):
            if len(ps) == 0 or len(ps) != k:
                continue
            if tuple(seq[p] for p in ps) == query:
                counts[seq[i]] += 1.0
        total = sum(counts)
        rows.append([(c + alpha) / (total + S * alpha) for c in counts])
    return torch.tensor(rows, dtype=torch.float64)


def brute_unigram(tokens, skip_positions, S, alpha):
    rows = []
    for seq in tokens.tolist():
        counts = [0.0] * S
        for i, s in enumerate(seq):
            if i in skip_positions:
                continue
            counts[s] += 1.0
        total = sum(counts)
        rows.append([(c + alpha) / (total + S * alpha) for c in counts])
    return torch.tensor(rows, dtype=torch.float64)


def ce(target: torch.Tensor, pred: torch.Tensor) -> float:
    """Mean cross-entropy -sum_s y(s) log f(s), written out here (not the package's)."""
    return float(-(target.double() * pred.double().log()).sum(-1).mean())


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# CausalGraph families
# ---------------------------------------------------------------------------------------------
def as_lists(graph: CausalGraph):
    return [list(p) for p in graph.parents]


def test_chain_structure():
    g = CausalGraph.chain(6)
    assert as_lists(g) == [[], [0], [1], [2], [3], []]
    assert list(g.target_parents) == [5]
    assert g.seq_len == 6
    assert g.query_position == 5
    assert g.is_single_parent


def test_icl_structure():
    g = CausalGraph.icl(7)
    assert as_lists(g) == [[], [0], [], [2], [], [4], []]
    assert list(g.target_parents) == [6]
    g = CausalGraph.icl(6)  # position 5 would be odd, but the last position is the query
    assert as_lists(g) == [[], [0], [], [2], [], []]
    assert list(g.target_parents) == [5]
    assert g.query_position == 5


def test_two_parent_structure():
    g = CausalGraph.two_parent(7)
    # P(i) = {(i-1)//2, i-1} for i >= 2 (positions 0 and 1 roots, as in the official notebook)
    assert as_lists(g) == [[], [], [0, 1], [1, 2], [1, 3], [2, 4], [2, 5]]
    assert list(g.target_parents) == [3, 6]  # {(T-1)//2, T-1}
    assert g.query_position is None
    assert not g.is_single_parent


def test_markov_structure():
    g = CausalGraph.markov(6, order=2)
    assert as_lists(g) == [[], [], [0, 1], [1, 2], [2, 3], [3, 4]]
    assert list(g.target_parents) == [4, 5]
    g3 = CausalGraph.markov(7, order=3)
    assert as_lists(g3) == [[], [], [], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]
    assert list(g3.target_parents) == [4, 5, 6]
    assert as_lists(CausalGraph.markov(6, order=1)) == as_lists(CausalGraph.chain(6))


def test_from_parents_structure():
    g = CausalGraph.from_parents([[], [0], [0], [1, 2], []])
    assert as_lists(g) == [[], [0], [0], [1, 2], []]
    assert list(g.target_parents) == [4]
    assert g.query_position == 4
    g2 = CausalGraph.from_parents([[], [0], [0], [1, 2]], target_parents=[2, 3])
    assert list(g2.target_parents) == [2, 3]
    assert g2.query_position is None
    adj = g.adjacency()
    expected = torch.zeros(5, 5)
    expected[1, 0] = expected[2, 0] = expected[3, 1] = expected[3, 2] = 1
    assert torch.equal(adj, expected)


@pytest.mark.parametrize("version", [1, 2])
def test_random_tree_is_seeded_and_well_formed(version):
    T = 12
    a = CausalGraph.random_tree(T, gen(3), version=version)
    b = CausalGraph.random_tree(T, gen(3), version=version)
    assert a.parents == b.parents
    others = {CausalGraph.random_tree(T, gen(s), version=version).parents for s in range(10)}
    assert len(others) > 1, "different seeds should give different trees"
    for g in [a, *[CausalGraph.random_tree(T, gen(s), version=version) for s in range(10)]]:
        ps = as_lists(g)
        assert ps[0] == [] and ps[T - 1] == []
        assert list(g.target_parents) == [T - 1]
        for i in range(1, T - 1):
            assert len(ps[i]) <= 1
            assert all(0 <= p < i for p in ps[i])


def test_random_tree_v1_distribution():
    # v1: p(i) uniform on {root, 0..i-1}, so P(root) = 1/(i+1) and P(p(i) = j) = 1/(i+1).
    T, n = 6, 3000
    counts = np.zeros((T, T + 1))  # column T: root
    g = gen(11)
    for _ in range(n):
        ps = CausalGraph.random_tree(T, g, version=1).parents
        for i in range(1, T - 1):
            counts[i, ps[i][0] if ps[i] else T] += 1
    for i in range(1, T - 1):
        p = 1.0 / (i + 1)
        tol = 5 * math.sqrt(p * (1 - p) / n)
        for j in list(range(i)) + [T]:
            assert abs(counts[i, j] / n - p) < tol, (i, j, counts[i, j] / n)


def test_random_tree_v2_distribution():
    # v2: root with probability 1/2, else a uniform earlier parent: P(p(i) = j) = 1/(2i).
    T, n = 6, 3000
    counts = np.zeros((T, T + 1))
    g = gen(12)
    for _ in range(n):
        ps = CausalGraph.random_tree(T, g, version=2).parents
        for i in range(1, T - 1):
            counts[i, ps[i][0] if ps[i] else T] += 1
    for i in range(1, T - 1):
        for j, p in [(T, 0.5)] + [(j, 0.5 / i) for j in range(i)]:
            tol = 5 * math.sqrt(p * (1 - p) / n)
            assert abs(counts[i, j] / n - p) < tol, (i, j, counts[i, j] / n)


def test_by_name_builds_the_families():
    assert CausalGraph.by_name("chain", 6).parents == CausalGraph.chain(6).parents
    assert CausalGraph.by_name("icl", 6).parents == CausalGraph.icl(6).parents
    assert CausalGraph.by_name("two-parent", 6).parents == CausalGraph.two_parent(6).parents
    assert CausalGraph.by_name("markov-2", 6).parents == CausalGraph.markov(6, 2).parents
    assert CausalGraph.by_name("random", 9, gen(4)).parents == CausalGraph.random_tree(9, gen(4), 1).parents
    assert CausalGraph.by_name("random-v2", 9, gen(4)).parents == CausalGraph.random_tree(9, gen(4), 2).parents
    with pytest.raises(ValueError, match="graph"):
        CausalGraph.by_name("nonsense", 6)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "parents, target, match",
    [
        ([[], [2], []], None, "position 1"),  # parent later than its child
        ([[], [1], []], None, "position 1"),  # self loop
        ([[], [0], [3], [2], []], None, "position 2"),  # cycle 2 <-> 3
        ([[], [-1], []], None, "position 1"),  # negative index
        ([[], [0], [7], []], None, "position 2"),  # out of range (>= T)
        ([[], [0], [0, 0], []], None, "position 2"),  # repeated parent
        ([[], [0], [1]], [5], "target"),  # target parent out of range
        ([[], [0], [1]], [-1], "target"),
        ([[], [0], [1]], [], "target_parents"),  # a target needs a parent
    ],
)
def test_bad_graphs_are_refused_naming_the_position(parents, target, match):
    with pytest.raises(ValueError, match=match):
        CausalGraph.from_parents(parents, target_parents=target)


def test_self_loop_at_last_position_names_the_position():
    # from_parents([[], [1]]): position 1 is its own parent. The error should name position 1
    # (the cycle), not only complain that the last position is no query.
    with pytest.raises(ValueError, match="position 1"):
        CausalGraph.from_parents([[], [1]])


def test_from_parents_without_target_needs_a_root_last():
    with pytest.raises(ValueError, match="target_parents"):
        CausalGraph.from_parents([[], [0], [1]])


def test_bad_types_are_refused():
    with pytest.raises(TypeError, match="position 1"):
        CausalGraph.from_parents([[], ["a"], []])
    with pytest.raises(TypeError, match="parents"):
        CausalGraph.from_parents("abc")
    with pytest.raises(ValueError, match="seq_len"):
        CausalGraph.chain(2)
    with pytest.raises(ValueError, match="version"):
        CausalGraph.random_tree(6, gen(0), version=3)
    with pytest.raises(ValueError, match="order"):
        CausalGraph.markov(6, order=0)


@pytest.mark.parametrize("vocab_size", [1, 0, -3, 2.5, True])
def test_task_refuses_bad_vocab_size(vocab_size):
    with pytest.raises((ValueError, TypeError), match="vocab_size"):
        InContextTask(CausalGraph.chain(5), vocab_size=vocab_size)


@pytest.mark.parametrize("alpha", [0, 0.0, -0.1, float("nan")])
def test_task_refuses_bad_alpha(alpha):
    with pytest.raises((ValueError, TypeError), match="alpha"):
        InContextTask(CausalGraph.chain(5), vocab_size=3, alpha=alpha)


def test_task_refuses_a_non_graph():
    with pytest.raises(TypeError, match="graph"):
        InContextTask([[], [0], []], vocab_size=3)


def test_task_dict_round_trip():
    task = InContextTask(CausalGraph.from_parents([[], [0], [0], [1, 2], []]), vocab_size=3, alpha=0.3)
    again = InContextTask.from_dict(task.to_dict())
    assert again.graph.parents == task.graph.parents
    assert again.graph.target_parents == task.graph.target_parents
    assert (again.vocab_size, again.alpha) == (3, 0.3)


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------
FIXED_PI = np.array(
    [
        [0.50, 0.20, 0.20, 0.10],
        [0.10, 0.60, 0.05, 0.25],
        [0.30, 0.30, 0.30, 0.10],
        [0.05, 0.15, 0.40, 0.40],
    ]
)


def repeated_tables(pi: np.ndarray, n: int, k: int = 1) -> dict[int, torch.Tensor]:
    return {k: torch.tensor(pi, dtype=torch.float64).expand(n, *pi.shape).clone()}


@pytest.fixture(scope="module")
def fixed_chain_batch():
    T, S, n = 8, 4, 100_000
    task = InContextTask(CausalGraph.chain(T), vocab_size=S)
    batch = task.sample_from_tables(repeated_tables(FIXED_PI, n), gen(2024))
    return task, batch


def test_chain_transition_frequencies_match_pi(fixed_chain_batch):
    task, batch = fixed_chain_batch
    T, S = task.seq_len, task.vocab_size
    tok = batch.tokens.numpy()
    # transitions (s_{i-1}, s_i) for the chain positions i = 1..T-2 (T-1 is the query)
    src = tok[:, 0 : T - 2].ravel()
    dst = tok[:, 1 : T - 1].ravel()
    counts = np.bincount(src * S + dst, minlength=S * S).reshape(S, S)
    freq = counts / counts.sum(1, keepdims=True)
    assert np.abs(freq - FIXED_PI).max() < 0.01, freq


def test_chain_roots_follow_the_stationary_distribution(fixed_chain_batch):
    task, batch = fixed_chain_batch
    n = len(batch)
    mu = stationary_by_power(FIXED_PI)
    # position 0 is the root; started in stationarity, every chain position is mu-distributed
    for pos in (0, task.seq_len - 2):
        freq = np.bincount(batch.tokens[:, pos].numpy(), minlength=4) / n
        tol = 5 * np.sqrt(mu * (1 - mu) / n)  # 5 standard errors of a frequency from n draws
        assert np.all(np.abs(freq - mu) < tol), (pos, freq, mu)


def test_roots_stationary_for_a_sparse_dirichlet_table():
    # a table drawn like the paper's (Dirichlet(0.1) rows: sparse); mu by numpy eigenvector
    S, T, n = 5, 4, 100_000
    task = InContextTask(CausalGraph.chain(T), vocab_size=S, alpha=0.1)
    pi = np.random.default_rng(3).dirichlet(0.1 * np.ones(S), size=S)
    vals, vecs = np.linalg.eig(pi.T)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    mu = v / v.sum()
    assert np.allclose(mu @ pi, mu, atol=1e-10) and (mu >= -1e-12).all()
    batch = task.sample_from_tables(repeated_tables(pi, n), gen(99))
    freq = np.bincount(batch.tokens[:, 0].numpy(), minlength=S) / n
    tol = 5 * np.sqrt(mu * (1 - mu) / n) + 1e-9
    assert np.all(np.abs(freq - mu) <= tol), (freq, mu)


def test_query_is_uniform_and_target_is_its_row(fixed_chain_batch):
    task, batch = fixed_chain_batch
    n, S, T = len(batch), task.vocab_size, task.seq_len
    freq = np.bincount(batch.tokens[:, T - 1].numpy(), minlength=S) / n
    assert np.all(np.abs(freq - 1 / S) < 5 * np.sqrt((1 / S) * (1 - 1 / S) / n)), freq
    expected = torch.tensor(FIXED_PI, dtype=torch.float32)[batch.tokens[:, T - 1]]
    assert torch.allclose(batch.target, expected, atol=1e-7)


@pytest.mark.parametrize("name", ["icl", "random"])
def test_query_is_uniform_for_icl_and_random_trees(name):
    T, S, n = 7, 4, 40_000
    task = InContextTask(CausalGraph.by_name(name, T, gen(5)), vocab_size=S)
    batch = task.sample(n, gen(6))
    freq = np.bincount(batch.tokens[:, T - 1].numpy(), minlength=S) / n
    assert np.all(np.abs(freq - 1 / S) < 5 * np.sqrt((1 / S) * (1 - 1 / S) / n)), freq


def test_icl_roots_stationary_and_pairs_follow_pi():
    T, S, n = 9, 4, 50_000
    task = InContextTask(CausalGraph.icl(T), vocab_size=S)
    batch = task.sample_from_tables(repeated_tables(FIXED_PI, n), gen(7))
    tok = batch.tokens.numpy()
    mu = stationary_by_power(FIXED_PI)
    roots = tok[:, [0, 2, 4, 6]].ravel()
    freq = np.bincount(roots, minlength=S) / roots.size
    assert np.all(np.abs(freq - mu) < 5 * np.sqrt(mu * (1 - mu) / roots.size)), (freq, mu)
    src, dst = tok[:, [0, 2, 4, 6]].ravel(), tok[:, [1, 3, 5, 7]].ravel()
    counts = np.bincount(src * S + dst, minlength=S * S).reshape(S, S)
    assert np.abs(counts / counts.sum(1, keepdims=True) - FIXED_PI).max() < 0.015


def test_two_parent_roots_uniform_and_transitions_follow_the_table():
    T, S, n = 6, 3, 60_000
    task = InContextTask(CausalGraph.two_parent(T), vocab_size=S)
    rng = np.random.default_rng(0)
    pi2 = rng.dirichlet(np.ones(S), size=S * S)  # row (a, b) -> index a * S + b
    batch = task.sample_from_tables(repeated_tables(pi2, n, k=2), gen(8))
    tok = batch.tokens.numpy()
    for pos in (0, 1):
        freq = np.bincount(tok[:, pos], minlength=S) / n
        assert np.all(np.abs(freq - 1 / S) < 5 * np.sqrt((1 / S) * (1 - 1 / S) / n)), (pos, freq)
    counts = np.zeros((S * S, S))
    for i in range(2, T):
        a, b = tok[:, (i - 1) // 2], tok[:, i - 1]
        np.add.at(counts, (a * S + b, tok[:, i]), 1)
    freq = counts / counts.sum(1, keepdims=True)
    assert np.abs(freq - pi2).max() < 0.02
    # target: the table row of the target's parents ((T-1)//2, T-1), by explicit indexing
    for r in range(200):
        a, b = int(tok[r, (T - 1) // 2]), int(tok[r, T - 1])
        assert torch.allclose(batch.target[r], torch.tensor(pi2[a * S + b], dtype=torch.float32))


def test_target_is_the_sequences_own_table_row():
    T, S, n = 7, 5, 300
    task = InContextTask(CausalGraph.chain(T), vocab_size=S)
    tables = task.draw_tables(n, gen(9))
    batch = task.sample_from_tables(tables, gen(10))
    for r in range(n):
        q = int(batch.tokens[r, T - 1])
        assert torch.allclose(batch.target[r], tables[1][r, q].float())


def test_markov2_roots_uniform_and_target_row():
    T, S, n = 6, 3, 30_000
    task = InContextTask(CausalGraph.markov(T, 2), vocab_size=S)
    tables = task.draw_tables(n, gen(13))
    batch = task.sample_from_tables(tables, gen(14))
    for pos in (0, 1):
        freq = np.bincount(batch.tokens[:, pos].numpy(), minlength=S) / n
        assert np.all(np.abs(freq - 1 / S) < 5 * np.sqrt((1 / S) * (1 - 1 / S) / n))
    for r in range(100):
        a, b = int(batch.tokens[r, T - 2]), int(batch.tokens[r, T - 1])
        assert torch.allclose(batch.target[r], tables[2][r, a * S + b].float())


def test_tables_are_dirichlet_rows():
    S, alpha, n = 4, 0.1, 20_000
    task = InContextTask(CausalGraph.chain(5), vocab_size=S, alpha=alpha)
    t = task.draw_tables(n, gen(15))[1].reshape(-1, S).double()
    assert torch.allclose(t.sum(-1), torch.ones(t.shape[0], dtype=torch.float64))
    assert (t >= 0).all()
    # Dirichlet(alpha 1_S): mean 1/S, variance (1/S)(1 - 1/S)/(S alpha + 1)
    var = (1 / S) * (1 - 1 / S) / (S * alpha + 1)
    N = t.shape[0]
    assert torch.all((t.mean(0) - 1 / S).abs() < 5 * math.sqrt(var / N))
    assert torch.all((t.var(0) - var).abs() < 0.1 * var)


def test_same_seed_same_batch_different_seed_differs():
    task = InContextTask(CausalGraph.chain(10), vocab_size=5)
    a, b, c = task.sample(64, gen(1)), task.sample(64, gen(1)), task.sample(64, gen(2))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.target, b.target)
    assert not torch.equal(a.tokens, c.tokens)
    assert not torch.equal(a.target, c.target)


def test_parent_tokens_match_a_loop():
    T, S, n = 10, 4, 50
    for graph in (CausalGraph.random_tree(T, gen(21)), CausalGraph.two_parent(T), CausalGraph.markov(T, 3)):
        task = InContextTask(graph, vocab_size=S)
        batch = task.sample(n, gen(22))
        k_max = max(1, max(len(p) for p in graph.parents))
        assert tuple(batch.parent_tokens.shape) == (n, T, k_max)
        for r in range(n):
            for i, ps in enumerate(graph.parents):
                for m in range(k_max):
                    want = int(batch.tokens[r, ps[m]]) if m < len(ps) else -1
                    assert int(batch.parent_tokens[r, i, m]) == want


def test_sample_refuses_bad_n():
    task = InContextTask(CausalGraph.chain(5), vocab_size=3)
    with pytest.raises(ValueError, match=r"^n: "):
        task.sample(0, gen(0))


# ---------------------------------------------------------------------------------------------
# the Bayes estimator and the baselines
# ---------------------------------------------------------------------------------------------
GRAPHS = {
    "chain": lambda: CausalGraph.chain(9),
    "icl": lambda: CausalGraph.icl(9),
    "random": lambda: CausalGraph.random_tree(10, gen(31)),
    "random-v2": lambda: CausalGraph.random_tree(10, gen(32), version=2),
    "two-parent": lambda: CausalGraph.two_parent(9),
    "custom-query": lambda: CausalGraph.from_parents([[], [0], [0], [1, 2], [2], [3, 4], [4], []]),
    "custom-two-parent-target": lambda: CausalGraph.from_parents(
        [[], [0], [0, 1], [1], [2, 3], [3, 1], [5]], target_parents=[5, 6]
    ),
}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_bayes_equals_brute_force_counts(name):
    graph = GRAPHS[name]()
    S, alpha = 3, 0.1
    task = InContextTask(graph, vocab_size=S, alpha=alpha)
    batch = task.sample(300, gen(33))
    want = brute_bayes(batch.tokens, graph.parent_lists(), list(graph.target_parents), S, alpha)
    got = bayes(batch.tokens, task).double()
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-6)


def test_bayes_hand_example_ignores_roots():
    # chain T=5, S=2: tokens [1, 1, 0, 1 | query 1]. Non-root positions 1, 2, 3 with parents
    # 0, 1, 2: (1 -> 1), (1 -> 0), (0 -> 1). Parent == 1 at positions 1, 2: counts [1, 1].
    # The official code would also count root 0 (parent "-1" = the query token 1): counts [1, 2].
    task = InContextTask(CausalGraph.chain(5), vocab_size=2, alpha=0.1)
    got = bayes(torch.tensor([[1, 1, 0, 1, 1]]), task)
    assert torch.allclose(got, torch.tensor([[1.1 / 2.2, 1.1 / 2.2]]), atol=1e-6)
    # query 0: only position 3 (parent 0 -> 1) matches: counts [0, 1]
    got = bayes(torch.tensor([[1, 1, 0, 1, 0]]), task)
    assert torch.allclose(got, torch.tensor([[0.1 / 1.2, 1.1 / 1.2]]), atol=1e-6)


def test_bayes_loss_of_the_paper_chain():
    S, T, alpha, n = 10, 20, 0.1, 2**16
    task = InContextTask(CausalGraph.chain(T), vocab_size=S, alpha=alpha)
    batch = task.sample(n, gen(0))
    loss = ce(batch.target, bayes(batch.tokens, task))
    print(f"\nBayes loss, chain S=10 T=20 alpha=0.1, 2^16 sequences: {loss:.4f}")
    assert abs(loss - 1.76) < 0.02, loss
    refs = baseline_losses(batch.tokens, batch.target, task)
    assert abs(refs["bayes"] - loss) < 1e-4
    assert abs(refs["uniform"] - math.log(S)) < 1e-4
    # (the add-alpha unigram can be worse than uniform on these sparse targets: no order there)
    assert refs["bayes"] < refs["unigram"] and refs["bayes"] < refs["uniform"]


def test_count_softmax_floor_is_the_best_scale_per_match_count_and_stays_above_bayes():
    S, T, alpha = 10, 20, 0.1
    task = InContextTask(CausalGraph.chain(T), vocab_size=S, alpha=alpha)
    batch = task.sample(2048, gen(5))
    # counts by loops, then the loss separates over N: a grid search over each g_N on its own
    counts = torch.zeros(len(batch.tokens), S, dtype=torch.float64)
    for r, seq in enumerate(batch.tokens.tolist()):
        for i in range(1, T - 1):
            if seq[i - 1] == seq[-1]:
                counts[r, seq[i]] += 1
    N, y = counts.sum(1).long(), batch.target.double()
    grid = torch.linspace(0, 40, 4001, dtype=torch.float64)
    best = 0.0
    for k in N.unique().tolist():
        rows = N == k
        losses = [float(-(y[rows] * (g * counts[rows]).log_softmax(-1)).sum(-1).sum()) for g in grid[:: 1 if k else 4000]]
        best += min(losses)
    best /= len(N)
    floor = count_softmax_floor(batch.tokens, batch.target, task)
    assert abs(floor - best) < 1e-4, (floor, best)
    bayes_loss = ce(batch.target, bayes(batch.tokens, task))
    assert bayes_loss + 0.01 < floor < math.log(S), (bayes_loss, floor)


@pytest.mark.parametrize("name", ["chain", "two-parent"])
def test_uniform_loss_is_log_S(name):
    S = 5
    task = InContextTask(GRAPHS[name](), vocab_size=S)
    batch = task.sample(500, gen(41))
    pred = uniform(batch.tokens, task)
    assert torch.allclose(pred.double(), torch.full((500, S), 1 / S, dtype=torch.float64))
    assert abs(ce(batch.target, pred) - math.log(S)) < 1e-5


@pytest.mark.parametrize("name, skip", [("chain", {8}), ("icl", {8}), ("random", {9}), ("two-parent", set())])
def test_unigram_equals_brute_force(name, skip):
    S, alpha = 4, 0.1
    graph = GRAPHS[name]()
    assert skip == ({graph.seq_len - 1} if name != "two-parent" else set())
    task = InContextTask(graph, vocab_size=S, alpha=alpha)
    batch = task.sample(200, gen(42))
    want = brute_unigram(batch.tokens, skip, S, alpha)
    assert torch.allclose(unigram(batch.tokens, task).double(), want, atol=1e-6)


def test_one_parent_equals_brute_force_last_parent():
    T, S, alpha = 9, 3, 0.1
    task = InContextTask(CausalGraph.two_parent(T), vocab_size=S, alpha=alpha)
    batch = task.sample(300, gen(43))
    rows = []
    for seq in batch.tokens.tolist():
        counts = [0.0] * S
        for i in range(2, T):  # positions with parents; keep only the last parent, i - 1
            if seq[i - 1] == seq[T - 1]:
                counts[seq[i]] += 1
        rows.append([(c + alpha) / (sum(counts) + S * alpha) for c in counts])
    want = torch.tensor(rows, dtype=torch.float64)
    assert torch.allclose(one_parent(batch.tokens, task).double(), want, atol=1e-6)
    refs = baseline_losses(batch.tokens, batch.target, task)
    assert "one_parent" in refs
    assert abs(refs["one_parent"] - ce(batch.target, want)) < 1e-4
