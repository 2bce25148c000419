"""Parent-token copying: is ``s_{p(i)}`` written into position ``i``?

Two views. :class:`LinearCopyingProbe` decodes the parent's token from the residual stream at
``i`` after each layer with a linear classifier fitted on part of the batch and scored on the
rest, beside a control task (the same labels shuffled across samples, so with the same
distribution but no relation to the input): the *selectivity* is the gap between the two
accuracies (Hewitt & Liang 2019). :class:`OVCopyingProbe` reads weights only: the eigenvalue
copying score of each head's full OV circuit ``W_E W_V W_O W_U`` (Olsson et al. 2022).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from probes.base import ForwardProbe, OwnPassProbe, ProbeBatch, resid_post_site
from probes.parents import check_parents, max_parents
from probes.records import Record
from probes.sites import ModelDims

SOLVERS = ("logistic", "ridge")


class LinearCopyingProbe(ForwardProbe):
    """Decode each position's parent token from ``blocks.{l}.hook_resid_post`` ``[batch, pos, d_model]``.

    parents: the task's parent list. solver: ``"logistic"`` (scikit-learn multinomial logistic
    regression, ``C``, ``max_iter``) or ``"ridge"`` (closed-form ridge regression onto one-hot
    labels, argmax decoding; torch only and cheap enough to run every few training steps).
    Sequences are split (seeded by ``seed``) into train and held-out parts, ``test_fraction`` held
    out, so no sequence contributes to both. Features are standardised with training statistics.
    Metrics per layer (``head=None``): ``accuracy``, ``control_accuracy``, ``selectivity``
    (their difference); with several parents per position, per slot (``accuracy_parent0``, ...).
    The records' probe name is ``linear_copying`` (logistic) or ``linear_copying_ridge``, so both
    solvers can run in one suite.
    """

    whole_batch = True  # a classifier is fitted on the batch's sequences

    def __init__(
        self,
        parents: Sequence[Sequence[int]],
        layers: Sequence[int] | None = None,
        solver: str = "logistic",
        test_fraction: float = 0.25,
        C: float = 1.0,
        ridge: float = 1e-2,
        max_iter: int = 500,
        seed: int = 0,
    ):
        super().__init__(layers)
        self.parents = check_parents(parents)
        if max_parents(self.parents) == 0:
            raise ValueError("parents: the graph has no edges, so there is no parent token to decode")
        if solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {SOLVERS}, got {solver!r}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
        self.solver, self.test_fraction, self.C, self.ridge = solver, test_fraction, C, ridge
        self.name = "linear_copying" if solver == "logistic" else "linear_copying_ridge"
        self.max_iter, self.seed = max_iter, seed

    def sites(self, dims: ModelDims) -> list[str]:
        return [resid_post_site(l) for l in self.layer_list(dims)]

    def check(self, batch: ProbeBatch) -> None:
        check_parents(self.parents, batch.seq_len, name=f"{self.name}: parents")
        if batch.tokens.shape[0] < 2:
            raise ValueError(f"tokens: {self.name} needs at least 2 sequences to hold some out, got {batch.tokens.shape[0]}")

    def compute(self, acts: dict[str, torch.Tensor], batch: ProbeBatch) -> list[Record]:
        tokens = batch.tokens
        n_seq = tokens.shape[0]
        gen = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(n_seq, generator=gen)
        n_test = min(n_seq - 1, max(1, round(self.test_fraction * n_seq)))
        test_seq, train_seq = order[:n_test], order[n_test:]
        k = max_parents(self.parents)
        slots = [(0, "")] if k == 1 else [(r, f"_parent{r}") for r in range(k)]
        out: list[Record] = []
        for slot, suffix in slots:
            pos = [i for i, ps in enumerate(self.parents) if len(ps) > slot]
            labels = tokens[:, [self.parents[i][slot] for i in pos]].cpu()  # [batch, n_pos]
            control = labels.flatten()[torch.randperm(labels.numel(), generator=gen)].view_as(labels)
            for l in self.layer_list(batch.dims):
                # float64 for scikit-learn; the ridge solve is well conditioned in float32
                dtype = torch.float32 if self.solver == "ridge" else torch.float64
                x = acts[resid_post_site(l)][:, pos].detach().to("cpu", dtype)  # [batch, n_pos, d]
                xs = (x[train_seq].flatten(0, 1), x[test_seq].flatten(0, 1))
                acc, ctrl = self._fit_scores(*xs, [
                    (labels[train_seq].flatten(), labels[test_seq].flatten()),
                    (control[train_seq].flatten(), control[test_seq].flatten()),
                ])
                extra = {"n_train": int(xs[0].shape[0]), "n_test": int(xs[1].shape[0])}
                out += [
                    Record(self.name, l, None, "accuracy" + suffix, acc, extra),
                    Record(self.name, l, None, "control_accuracy" + suffix, ctrl),
                    Record(self.name, l, None, "selectivity" + suffix, acc - ctrl),
                ]
        return out

    def _fit_scores(
        self, x_train: torch.Tensor, x_test: torch.Tensor, label_sets: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> list[float]:
        """Held-out accuracy of a classifier fitted on ``(x_train, y_train)`` for each ``(y_train, y_test)``
        of ``label_sets``; x ``[n, d]``, y ``[n]``. Features are standardised with training statistics;
        features constant on the training rows carry nothing and are dropped."""
        mean, std = x_train.mean(0), x_train.std(0)
        keep = std > 1e-6
        if not keep.any():
            keep[0] = True  # a constant input: every classifier predicts one class
        mean, std = mean[keep], std[keep]
        x_train, x_test = (x_train[:, keep] - mean) / std, (x_test[:, keep] - mean) / std
        if self.solver == "ridge":
            return self._ridge_scores(x_train, x_test, label_sets)
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        scores = []
        # One BLAS/OpenMP thread: these fits are small, and on a busy machine spinning threads
        # made each one ~50x slower (1 s instead of 20 ms on 2 shared cores).
        with warnings.catch_warnings(), threadpool_limits(1):
            # A probe that stops at max_iter still reports its held-out accuracy honestly.
            warnings.simplefilter("ignore", ConvergenceWarning)
            for y_train, y_test in label_sets:
                clf = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(x_train.numpy(), y_train.numpy())
                scores.append(float(clf.score(x_test.numpy(), y_test.numpy())))
        return scores

    def _ridge_scores(
        self, x_train: torch.Tensor, x_test: torch.Tensor, label_sets: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> list[float]:
        """Closed-form ridge regression onto one-hot labels, argmax decoding: one Gram matrix and one
        solve serve every label set (their one-hot targets side by side)."""
        n_classes = int(max(max(int(a.max()), int(b.max())) for a, b in label_sets)) + 1
        a = torch.cat([x_train, torch.ones(len(x_train), 1, dtype=x_train.dtype)], 1)
        y = torch.cat([torch.nn.functional.one_hot(y_tr, n_classes) for y_tr, _ in label_sets], 1).to(a.dtype)
        reg = self.ridge * len(a) * torch.eye(a.shape[1], dtype=a.dtype)
        reg[-1, -1] = 0  # the intercept is not shrunk
        w = torch.linalg.solve(a.T @ a + reg, a.T @ y)  # [d + 1, sets * classes]
        scores = torch.cat([x_test, torch.ones(len(x_test), 1, dtype=x_test.dtype)], 1) @ w
        return [
            float((scores[:, i * n_classes : (i + 1) * n_classes].argmax(-1) == y_te).double().mean())
            for i, (_, y_te) in enumerate(label_sets)
        ]


WeightsFn = Callable[[nn.Module], Mapping[str, torch.Tensor]]


def ov_circuits(weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Full OV circuits ``W_E W_V W_O W_U`` of every head: ``[layer, head, vocab, vocab_out]``.

    weights: ``W_E [vocab, d_model]``, ``W_V [layer, head, d_model, d_head]``,
    ``W_O [layer, head, d_head, d_model]``, ``W_U [d_model, vocab_out]`` (TransformerLens layouts).
    Biases, layer norms and positional embeddings are left out.
    """
    missing = [k for k in ("W_E", "W_V", "W_O", "W_U") if k not in weights]
    if missing:
        raise ValueError(f"weights: missing {missing}; expected W_E, W_V, W_O, W_U in TransformerLens layouts")
    w = {k: weights[k].detach().double() for k in ("W_E", "W_V", "W_O", "W_U")}
    return torch.einsum("vd,lhde,lhef,fu->lhvu", w["W_E"], w["W_V"], w["W_O"], w["W_U"])


def copying_score(circuit: torch.Tensor) -> torch.Tensor:
    """Olsson et al.'s copying score ``sum(eig) / sum(|eig|)`` of square matrices ``[..., n, n]``; NaN for zero matrices."""
    eig = torch.linalg.eigvals(circuit.double())
    total = eig.abs().sum(-1)
    return torch.where(total > 0, eig.real.sum(-1) / total, torch.full_like(total, float("nan")))


class OVCopyingProbe(OwnPassProbe):
    """Weight-space copying per layer and head; runs no forward pass.

    Metrics: ``score`` (:func:`copying_score` of the OV circuit, in [-1, 1]; 1 for a pure copier)
    and ``diag_fraction`` (the fraction of tokens whose own logit is the largest in their row of the
    circuit). weights: a function ``model -> {"W_E", "W_V", "W_O", "W_U"}``; by default these
    attributes are read from the model (HookedTransformer and TransformerBridge have them).
    """

    name = "ov_copying"

    def __init__(self, layers: Sequence[int] | None = None, weights: WeightsFn | None = None):
        super().__init__(layers)
        if weights is not None and not callable(weights):
            raise TypeError(f"weights: expected None or a function model -> dict of weights, got {type(weights).__name__}")
        self.weights = weights

    def run(self, model: nn.Module, batch: ProbeBatch) -> list[Record]:
        if self.weights is not None:
            weights = self.weights(model)
        else:
            missing = [k for k in ("W_E", "W_V", "W_O", "W_U") if not isinstance(getattr(model, k, None), torch.Tensor)]
            if missing:
                raise ValueError(
                    f"{self.name}: {type(model).__name__} has no {missing} attributes; "
                    "pass OVCopyingProbe(weights=lambda model: {'W_E': ..., 'W_V': ..., 'W_O': ..., 'W_U': ...})"
                )
            weights = {k: getattr(model, k) for k in ("W_E", "W_V", "W_O", "W_U")}
        with torch.no_grad():
            circuits = ov_circuits(weights)
        if circuits.shape[-1] != circuits.shape[-2]:
            raise ValueError(f"{self.name}: the OV circuit is {tuple(circuits.shape[-2:])}, not square; input and output vocabularies differ")
        score = copying_score(circuits)
        own = torch.arange(circuits.shape[-1])
        diag = (circuits.argmax(-1) == own).double().mean(-1)
        out: list[Record] = []
        for l in self.layer_list(batch.dims):
            for h in range(circuits.shape[1]):
                out.append(Record(self.name, l, h, "score", float(score[l, h])))
                out.append(Record(self.name, l, h, "diag_fraction", float(diag[l, h])))
        return out
