"""Behaviour: what the model predicts, against a reference and against simple in-context strategies.

All divergences are ``KL(p || model)`` at the last position, ``p`` being the reference or a
strategy, in nats. The strategies (Edelman et al. 2024) are computed from the context
``tokens[:, :-1]`` for the query ``tokens[:, -1]``, with add-``alpha`` smoothing:
uniform ``1/V``; unigram, the context's token frequencies; bigram, the frequencies of the tokens
that follow an occurrence of the query token inside the context. For the chain task the bigram
strategy is the Bayes estimator.
"""

from __future__ import annotations

import torch

from probes.base import LOGITS, ForwardProbe, ProbeBatch, Stats
from probes.inputs import check_distribution
from probes.records import Record
from probes.sites import ModelDims


def kl_divergence(p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` per row ``[batch]`` from probabilities ``p`` and log-probabilities ``log_q`` ``[batch, V]``."""
    return (torch.xlogy(p, p) - p * log_q).sum(-1)


def strategy_predictions(tokens: torch.Tensor, vocab_size: int, alpha: float = 0.1) -> dict[str, torch.Tensor]:
    """In-context strategies for the next token after ``tokens[:, -1]``: ``{"uniform", "unigram", "bigram"}``, each ``[batch, V]``."""
    context, query = tokens[:, :-1], tokens[:, -1]
    b = tokens.shape[0]
    uni = torch.zeros(b, vocab_size).scatter_add_(1, context, torch.ones_like(context, dtype=torch.float))
    follows = (context[:, :-1] == query[:, None]).float()  # [batch, T-2]: context[j] is the query token
    bi = torch.zeros(b, vocab_size).scatter_add_(1, context[:, 1:], follows)
    smooth = lambda c: (c + alpha) / (c.sum(-1, keepdim=True) + vocab_size * alpha)  # noqa: E731
    return {"uniform": torch.full((b, vocab_size), 1.0 / vocab_size), "unigram": smooth(uni), "bigram": smooth(bi)}


class BehaviourProbe(ForwardProbe):
    """The model's last-position prediction against a reference and the in-context strategies.

    Metrics (``layer = head = None``): ``kl_to_uniform``, ``kl_to_unigram``, ``kl_to_bigram``; and,
    when ``reference=`` ``[batch, vocab]`` is passed to the suite (e.g. the Bayes estimator),
    ``kl_to_reference`` and ``loss`` (the cross-entropy ``-sum(reference * log model)``).
    alpha: the strategies' pseudo-count.
    """

    name = "behaviour"

    def __init__(self, alpha: float = 0.1):
        super().__init__(None)
        if not alpha > 0:
            raise ValueError(f"alpha: expected a positive pseudo-count, got {alpha!r}")
        self.alpha = alpha

    def check(self, batch: ProbeBatch) -> None:
        if batch.seq_len < 3:
            raise ValueError(f"tokens: {self.name} needs sequences of length >= 3, got {batch.seq_len}")
        if "reference" in batch.context:
            check_distribution(batch.context["reference"], "reference", batch.tokens.shape[0])

    def sites(self, dims: ModelDims) -> list[str]:
        return [LOGITS]

    def stats(self, site: str, act: torch.Tensor, chunk: ProbeBatch) -> Stats:
        log_q = act[:, -1].detach().float().cpu().log_softmax(-1)
        V = log_q.shape[-1]
        out: Stats = {"n": torch.tensor(float(log_q.shape[0]), dtype=torch.float64)}
        if "reference" in chunk.context:
            ref = check_distribution(chunk.context["reference"], "reference", log_q.shape[0], V).cpu()
            out["kl_to_reference"] = kl_divergence(ref, log_q).double().sum()
            out["loss"] = (-(ref * log_q).sum(-1)).double().sum()
        for k, p in strategy_predictions(chunk.tokens.cpu(), V, self.alpha).items():
            out[f"kl_to_{k}"] = kl_divergence(p, log_q).double().sum()
        return out

    def records(self, stats: Stats, batch: ProbeBatch) -> list[Record]:
        n = float(stats["n"])
        return [Record(self.name, None, None, k, float(v / n)) for k, v in stats.items() if k != "n"]


class ICLScore(ForwardProbe):
    """In-context-learning score (Olsson et al. 2022): next-token loss late in the context minus early.

    The loss at position ``t`` is ``-log model(s_{t+1} | s_{<=t})``, averaged over the batch.
    early, late: positions (default ``early = max(1, (T-1)//10)``, ``late = T-2``). Metric ``score``
    (negative when the model improves with context), plus ``early_loss`` and ``late_loss``;
    ``extra["per_position"]`` holds the loss at every position ``0..T-2``.
    """

    name = "icl"

    def __init__(self, early: int | None = None, late: int | None = None):
        super().__init__(None)
        self.early, self.late = early, late

    def _positions(self, T: int) -> tuple[int, int]:
        early = max(1, (T - 1) // 10) if self.early is None else self.early
        late = T - 2 if self.late is None else self.late
        return early, late

    def check(self, batch: ProbeBatch) -> None:
        T = batch.seq_len
        early, late = self._positions(T)
        if not 0 <= early < late <= T - 2:
            raise ValueError(f"early, late: expected 0 <= early < late <= {T - 2} for sequences of length {T}, got {early}, {late}")

    def sites(self, dims: ModelDims) -> list[str]:
        return [LOGITS]

    def stats(self, site: str, act: torch.Tensor, chunk: ProbeBatch) -> Stats:
        log_q = act[:, :-1].detach().float().cpu().log_softmax(-1)  # [batch, T-1, V]
        nll = -log_q.gather(-1, chunk.tokens[:, 1:, None].cpu()).squeeze(-1)  # [batch, T-1]
        return {"nll": nll.double().sum(0), "n": torch.tensor(float(nll.shape[0]), dtype=torch.float64)}

    def records(self, stats: Stats, batch: ProbeBatch) -> list[Record]:
        nll = (stats["nll"] / stats["n"]).float()  # [T-1]
        early, late = self._positions(batch.seq_len)
        return [
            Record(self.name, None, None, "score", float(nll[late] - nll[early]), {"per_position": nll.tolist()}),
            Record(self.name, None, None, "early_loss", float(nll[early])),
            Record(self.name, None, None, "late_loss", float(nll[late])),
        ]
