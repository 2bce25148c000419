"""Reference predictors: the Bayes estimator and the baselines, with their losses (docs/science.md §1)."""

from __future__ import annotations

import torch

from interp_causal.tasks.graph import CausalGraph
from interp_causal.tasks.task import InContextTask, parent_tokens


def bayes(tokens: torch.Tensor, task: InContextTask, graph: CausalGraph | None = None) -> torch.Tensor:
    """Dirichlet-posterior count estimator ``[n, S]`` for ``tokens`` ``[n, T]``.

    ``f*(s') = (#{i : s_P(i) = s_P(target), s_i = s'} + alpha) / (#{i : s_P(i) = s_P(target)} + S alpha)``,
    counting only positions with as many parents as the target (roots never count: the
    official code indexes a root's parent as -1, the last token, and miscounts them).
    ``graph`` overrides the task's graph, e.g. ``graph.with_last_parent_only()`` for the
    one-parent baseline.
    """
    counts = match_counts(tokens, task, graph)
    return (counts + task.alpha) / (counts.sum(-1, keepdim=True) + task.vocab_size * task.alpha)


def match_counts(tokens: torch.Tensor, task: InContextTask, graph: CausalGraph | None = None) -> torch.Tensor:
    """``[n, S]``: ``#{i : s_P(i) = s_P(target), s_i = s'}``, the counts of :func:`bayes`."""
    graph = task.graph if graph is None else graph
    k = len(graph.target_parents)
    pt = parent_tokens(tokens, graph)[..., :k]  # [n, T, k]
    query = tokens[:, list(graph.target_parents)]  # [n, k]
    degree_ok = torch.tensor([len(p) == k for p in graph.parents])  # [T]
    match = (pt == query[:, None, :]).all(-1) & degree_ok  # [n, T]
    return torch.zeros(tokens.shape[0], task.vocab_size).scatter_add_(1, tokens, match.float())


def count_softmax_floor(tokens: torch.Tensor, target: torch.Tensor, task: InContextTask) -> float:
    """Lowest mean cross-entropy of ``softmax(g_N * counts)`` over one free scale ``g_N`` per match
    count ``N`` (:func:`match_counts`), fitted on this batch (the problem is convex in ``g``).

    A linear readout of attention spread over the matches (and the query itself, with a flat value)
    gives logits ``lambda * counts / (N + kappa)``, a member of this family; the Bayes estimator
    ``(counts + alpha) / (N + S alpha)`` is not, so this is how close such a readout can get to Bayes.
    """
    counts = match_counts(tokens, task).double()
    y = target.double()
    N = counts.sum(-1).long()
    g = torch.zeros(int(N.max()) + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([g], max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        value = -(y * (g[N, None] * counts).log_softmax(-1)).sum(-1).mean()
        value.backward()
        return value

    opt.step(loss)
    return float(loss().detach())


def frequency_softmax(tokens: torch.Tensor, task: InContextTask) -> torch.Tensor:
    """``[n, S]``: ``softmax(counts / N)``, the in-context frequencies of :func:`match_counts` (zero
    without a match) used as logits. The best the theorem's reduced model can predict: its readout
    ``W = I`` turns layer 2's attention-weighted histogram, a probability vector, into logits."""
    counts = match_counts(tokens, task)
    return (counts / counts.sum(-1, keepdim=True).clamp_min(1.0)).softmax(-1)


def one_parent(tokens: torch.Tensor, task: InContextTask) -> torch.Tensor:
    """The Bayes estimator of a model that sees only each node's last parent (multi-parent baseline)."""
    return bayes(tokens, task, task.graph.with_last_parent_only())


def unigram(tokens: torch.Tensor, task: InContextTask) -> torch.Tensor:
    """In-context unigram frequencies ``[n, S]``, add-alpha smoothed (the query token is not counted)."""
    S = task.vocab_size
    keep = torch.ones(task.seq_len)
    if task.graph.query_position is not None:
        keep[task.graph.query_position] = 0.0
    counts = torch.zeros(tokens.shape[0], S).scatter_add_(1, tokens, keep.expand(tokens.shape).contiguous())
    return (counts + task.alpha) / (counts.sum(-1, keepdim=True) + S * task.alpha)


def uniform(tokens: torch.Tensor, task: InContextTask) -> torch.Tensor:
    """The uniform predictor ``[n, S]``; its expected loss is ``log S``."""
    return torch.full((tokens.shape[0], task.vocab_size), 1.0 / task.vocab_size)


def cross_entropy(target: torch.Tensor, prediction: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over the batch of ``-sum_s' y(s') log f(s')`` for distributions ``[n, S]``."""
    return -(target * prediction.clamp_min(eps).log()).sum(-1).mean()


def baseline_losses(tokens: torch.Tensor, target: torch.Tensor, task: InContextTask) -> dict[str, float]:
    """Expected cross-entropy of every reference predictor on a batch: ``bayes``, ``uniform``,
    ``unigram``, and ``one_parent`` for graphs whose target has several parents."""
    predictors = {"bayes": bayes, "uniform": uniform, "unigram": unigram}
    if len(task.graph.target_parents) > 1:
        predictors["one_parent"] = one_parent
    return {name: float(cross_entropy(target, f(tokens, task))) for name, f in predictors.items()}
