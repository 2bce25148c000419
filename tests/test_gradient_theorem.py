"""The theorem's key step (docs/science.md §3): on the reduced model at its starting point (``A^(1) = 0``,
``A^(2) = beta_0 I``), the descent direction of the first layer's position block puts every
non-root position's weight on its parent.

Two references, both computed here from sampled tables, independently of the probe:

- the chi^2 mutual information between positions, counted within groups of sequences that share
  one transition table (the theory's prior average). Its row argmax is the parent too (the
  data-processing inequality), but it does *not* order the other positions as the gradient does:
  on the chain the gradient is negative two steps back while the information there is the
  second largest (mean per-row Spearman about 0.36);
- ``R[i, j] = E[pi(s_i | s_j) / f(s_i)]`` (``f``: the token's frequency in its own sequence), what a
  first-order expansion of this model's loss says the gradient measures: at the start the output
  is about ``f`` and the loss's derivative at token ``a`` is ``-pi(a | s_q) / f(a)``; raising
  ``A^(1)[i, j]`` makes key ``i`` match queries ``s_q = s_j``, which then reward ``s_i``. Its ranking
  is the gradient's (mean per-row Spearman >= 0.8 over every earlier position, all three graphs).
"""

import pytest
import torch

from interp_causal.models import paper_model
from interp_causal.tasks import CausalGraph, InContextTask
from probes import GradientProbe, ProbeSuite

S, T = 10, 20


def chi2_mi_by_counting(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """``[T, T]``: mean over groups ``[g, n, T]`` of ``sum_ab p_ij(a, b)^2 / (p_i(a) p_j(b)) - 1``, by bincounts."""
    g, n, t = tokens.shape
    group = torch.arange(g)[:, None]
    marg = [torch.bincount((group * vocab + tokens[:, :, i]).flatten(), minlength=g * vocab).view(g, vocab).double() / n
            for i in range(t)]
    out = torch.zeros(t, t, dtype=torch.float64)
    for i in range(t):
        for j in range(t):
            cell = (group * vocab + tokens[:, :, i]) * vocab + tokens[:, :, j]
            joint = torch.bincount(cell.flatten(), minlength=g * vocab * vocab).view(g, vocab, vocab).double() / n
            indep = marg[i][:, :, None] * marg[j][:, None, :]
            ratio = torch.where(indep > 0, joint**2 / indep.clamp_min(1e-300), torch.zeros_like(joint))
            out[i, j] = (ratio.sum((1, 2)) - 1).mean()
    return out


def first_order_reference(task: InContextTask, n: int, gen: torch.Generator) -> torch.Tensor:
    """``[T, T]``: ``R[i, j] = E[pi(s_i | s_j) / f(s_i)]`` over tables and sequences, reading each
    sequence's own table; ``f(a)`` = how often ``a`` occurs in that sequence, counted from one-hots."""
    tables = task.draw_tables(n, gen)
    x = task.sample_from_tables(tables, gen).tokens
    pi, rows = tables[1].double(), torch.arange(n)
    freq = torch.nn.functional.one_hot(x, S).sum(1).double() / T  # [n, S]
    R = torch.zeros(T, T, dtype=torch.float64)
    for i in range(T):
        for j in range(i):
            R[i, j] = (pi[rows, x[:, j], x[:, i]] / freq[rows, x[:, i]]).mean()
    return R.float()


def descent_and_records(task: InContextTask, reference: torch.Tensor, gen: torch.Generator, n: int = 2**14):
    model = paper_model(task, reduced=True, beta0=0.1)
    batch = task.sample(n, gen)
    suite = ProbeSuite([GradientProbe(task.graph.parent_lists(), reference, layer=0)])
    records = {r.metric: r for r in suite.run(model, batch.tokens, targets=batch.target)}
    return -torch.tensor(records["gradient_norm"].extra["gradient"]), records  # [T, T]


@pytest.mark.parametrize("name", ["chain", "icl", "random"])
def test_gradient_at_the_start_points_at_the_parent_as_mutual_information_does(name):
    gen = torch.Generator().manual_seed(0)
    task = InContextTask(CausalGraph.by_name(name, T, torch.Generator().manual_seed(1)), S, 0.1)
    groups, per_group = 32, 256
    tables = {k: v.repeat_interleave(per_group, 0) for k, v in task.draw_tables(groups, gen).items()}
    mi = chi2_mi_by_counting(task.sample_from_tables(tables, gen).tokens.view(groups, per_group, T), S).float()
    descent, records = descent_and_records(task, mi, gen)
    for i, ps in enumerate(task.graph.parents):
        if ps and i > 1:  # position 1 has only one earlier position
            assert int(descent[i, :i].argmax()) == ps[0], f"{name}: row {i} points at {int(descent[i, :i].argmax())}"
    assert records["argmax_agreement"].value == 1.0  # the information's row argmax is the parent too


# Sequences for the rank check: the reference's and the gradient's. Ranks among positions whose
# expansion terms nearly tie (icl's many roots) are Monte Carlo noise at 2^14 each: across seeds
# 0-3 icl's mean rank correlation was 0.74-0.85 on either sampler, straddling the 0.8 the check
# asks. With these (the reference is cheap, the gradient not) it was 0.83-0.88.
N_REFERENCE, N_GRADIENT = 2**18, 2**15


def spearman_by_hand(x: list[float], y: list[float]) -> float:
    """Pearson correlation of the ranks (no ties expected among these floats)."""
    rx = torch.tensor(x).argsort().argsort().double()
    ry = torch.tensor(y).argsort().argsort().double()
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.square().sum() * ry.square().sum()).sqrt())


@pytest.mark.science  # a claim of the paper's, at 2^18 + 2^15 sequences: checked once per make test
@pytest.mark.parametrize("name", ["chain", "icl", "random"])
def test_gradient_at_the_start_ranks_positions_by_the_first_order_expansion(name):
    gen = torch.Generator().manual_seed(0)
    task = InContextTask(CausalGraph.by_name(name, T, torch.Generator().manual_seed(1)), S, 0.1)
    R = first_order_reference(task, N_REFERENCE, gen)
    descent, _ = descent_and_records(task, R, gen, N_GRADIENT)
    rhos = []
    for i, ps in enumerate(task.graph.parents):
        if ps and i >= 2:  # every earlier position, as the rank check asks
            rhos.append(spearman_by_hand([float(descent[i, j]) for j in range(i)], [float(R[i, j]) for j in range(i)]))
    assert len(rhos) >= 5, f"{name}: too few rows to rank"
    assert sum(rhos) / len(rhos) >= 0.8, (name, rhos)
