"""The theorem's key step (PAPER.md §3): on the reduced model at its starting point (``A^(1) = 0``,
``A^(2) = beta_0 I``), the descent direction of the first layer's position block puts every
non-root position's weight on its parent, and ranks earlier positions as the chi^2 mutual
information does. The gradient is the probe's; the mutual information is counted here, within
groups of sequences that share one transition table, as the theory's prior average."""

import pytest
import torch

from interp_causal.models import paper_model
from interp_causal.tasks import CausalGraph, InContextTask
from probes import GradientProbe, ProbeSuite

S, T = 10, 20


def chi2_mi_by_counting(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """``[T, T]``: mean over groups ``[g, n, T]`` of ``sum_ab p_ij(a, b)^2 / (p_i(a) p_j(b)) - 1``, by bincounts."""
    g, n, t = tokens.shape
    out = torch.zeros(t, t, dtype=torch.float64)
    for grp in tokens:
        marg = [torch.bincount(grp[:, i], minlength=vocab).double() / n for i in range(t)]
        for i in range(t):
            for j in range(t):
                joint = torch.bincount(grp[:, i] * vocab + grp[:, j], minlength=vocab * vocab).double().view(vocab, vocab) / n
                indep = marg[i][:, None] * marg[j][None, :]
                out[i, j] += torch.where(indep > 0, joint**2 / indep.clamp_min(1e-300), torch.zeros_like(joint)).sum() - 1
    return out / g


@pytest.mark.parametrize("name", ["chain", "icl", "random"])
def test_gradient_at_the_start_points_at_the_parent_and_ranks_like_mutual_information(name):
    gen = torch.Generator().manual_seed(0)
    graph = CausalGraph.by_name(name, T, torch.Generator().manual_seed(1))
    task = InContextTask(graph, S, 0.1)
    model = paper_model(task, reduced=True, beta0=0.1)
    batch = task.sample(2**14, gen)

    groups, per_group = 48, 256
    tables = {k: v.repeat_interleave(per_group, 0) for k, v in task.draw_tables(groups, gen).items()}
    grouped = task.sample_from_tables(tables, gen).tokens.view(groups, per_group, T)
    mi = chi2_mi_by_counting(grouped, S).float()

    suite = ProbeSuite([GradientProbe(graph.parent_lists(), mi, layer=0)])
    records = {r.metric: r for r in suite.run(model, batch.tokens, targets=batch.target)}
    descent = -torch.tensor(records["gradient_norm"].extra["gradient"])  # [T, T]
    for i, ps in enumerate(graph.parents):
        if ps and i > 1:  # position 1 has only one earlier position
            assert int(descent[i, :i].argmax()) == ps[0], f"{name}: row {i} points at {int(descent[i, :i].argmax())}, parent {ps[0]}"
    assert records["argmax_agreement"].value == 1.0  # the Monte-Carlo information peaks at the parent too
    print(f"{name}: spearman(-gradient, MI) per row, mean {records['spearman'].value:.3f}")
