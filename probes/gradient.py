"""Gradient vs mutual information: does the first gradient step point layer-0 attention at the parents?

The gradient is taken with respect to a positional bias ``B[q, k]`` added to one layer's attention
scores (``blocks.{l}.attn.hook_attn_scores``) at ``B = 0``, of the last-position cross-entropy
against soft targets. For the paper's disentangled model (one-hot positions, no attention scale)
the score is ``x_q^T A x_k``, so this is exactly ``dL/dA`` restricted to the position x position
block. The theory says ``-dL/dB[i, j]`` ranks the earlier positions ``j`` of row ``i`` as a chi^2
mutual information between ``s_i`` and ``s_j`` does, with the parent on top.

Model-agnostic: the bias is added through a hook. Where the score site is not on the computation
path (a ``TransformerBridge`` around a natively computed attention fires ``hook_attn_scores`` with
the post-softmax pattern it returns and ignores edits, in TransformerLens 3.9 and 4.3), the same
gradient is assembled from ``hook_pattern``, ``hook_v`` and the gradient at ``hook_z``:
``dL/dB = sum_batch P * (G - rowsum(P * G))`` with ``G[q, k] = dL/dz_q . v_k``, valid whenever
``z = P v`` per head.

This probe runs its own forward and backward pass, with gradients on for a leaf bias only:
parameter ``.grad`` fields are never touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from probes.base import OwnPassProbe, ProbeBatch, pattern_site
from probes.parents import check_parents
from probes.inputs import check_distribution, check_square, check_tokens
from probes.records import Record
from probes.sites import SiteMap, find_site, model_device, run_with_sites


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, position: int = -1) -> torch.Tensor:
    """Mean over the batch of ``-sum_v targets[b, v] log softmax(logits[b, position])[v]``."""
    return -(targets * logits[:, position].float().log_softmax(-1)).sum(-1).mean()


def score_bias_gradient(
    model: nn.Module,
    tokens: torch.Tensor,
    targets: torch.Tensor,
    layer: int = 0,
    site_map: SiteMap | None = None,
) -> torch.Tensor:
    """``dL/dB`` ``[head, T, T]`` for a bias ``B`` (shared by the batch) added to ``layer``'s attention scores at 0.

    tokens: ``[batch, T]``; targets: ``[batch, vocab]`` soft targets for the last position.
    """
    tokens = check_tokens(tokens)
    targets = check_distribution(targets, "targets", tokens.shape[0])
    device = model_device(model)
    if device is not None:
        tokens, targets = tokens.to(device), targets.to(device)
    scores = f"blocks.{layer}.attn.hook_attn_scores"
    grad = None
    if _has_site(model, scores, site_map):
        bias: list[torch.Tensor] = []

        def add_bias(s: torch.Tensor) -> torch.Tensor:
            if not bias:
                bias.append(torch.zeros(s.shape[1:], dtype=s.dtype, device=s.device, requires_grad=True))
            return s + bias[0]

        with torch.enable_grad():
            logits, _ = run_with_sites(model, tokens, [scores], site_map, edits={scores: add_bias})
            loss = soft_cross_entropy(logits, targets)
            if loss.requires_grad:
                (grad,) = torch.autograd.grad(loss, bias[0], allow_unused=True)
    if grad is None:
        grad = _gradient_through_values(model, tokens, targets, layer, site_map)
    return grad.detach()


def _has_site(model: nn.Module, site: str, site_map: SiteMap | None) -> bool:
    try:
        find_site(model, site, site_map)
        return True
    except LookupError:
        return False


def _gradient_through_values(
    model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor, layer: int, site_map: SiteMap | None
) -> torch.Tensor:
    """``dL/dB`` from the pattern, the values and ``dL/dz``, for models whose score site is read-only."""
    pattern, v_site, z_site = pattern_site(layer), f"blocks.{layer}.attn.hook_v", f"blocks.{layer}.attn.hook_z"
    leaf: list[torch.Tensor] = []

    def z_leaf(z: torch.Tensor) -> torch.Tensor:
        leaf.append(z.detach().requires_grad_(True))
        return leaf[-1]

    with torch.enable_grad():
        logits, acts = run_with_sites(model, tokens, [pattern, v_site, z_site], site_map, edits={z_site: z_leaf})
        loss = soft_cross_entropy(logits, targets)
        dz = torch.autograd.grad(loss, leaf[0], allow_unused=True)[0] if loss.requires_grad else None
    if dz is None:
        raise RuntimeError(
            f"score_bias_gradient: neither {type(model).__name__}'s hook_attn_scores nor its hook_z of layer {layer} "
            "is on the path from the input to the logits, so the gradient cannot be taken there"
        )
    p, v = acts[pattern].detach().float(), acts[v_site].detach().float()  # [b, h, q, k], [b, k, h_kv, d]
    if v.shape[2] != p.shape[1]:  # grouped-query attention: each key/value head serves several heads
        v = v.repeat_interleave(p.shape[1] // v.shape[2], dim=2)
    g = torch.einsum("bqhd,bkhd->bhqk", dz.float(), v)
    return (p * (g - (p * g).sum(-1, keepdim=True))).sum(0)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank) along the last dim."""
    less = (x[..., :, None] > x[..., None, :]).sum(-1).to(torch.float64)
    equal = (x[..., :, None] == x[..., None, :]).sum(-1).to(torch.float64)
    return less + (equal + 1) / 2


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last dim (NaN where either side is constant)."""
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(-1, keepdim=True), ry - ry.mean(-1, keepdim=True)
    den = (rx.square().sum(-1) * ry.square().sum(-1)).sqrt()
    return torch.where(den > 0, (rx * ry).sum(-1) / den.clamp_min(1e-300), torch.full_like(den, float("nan")))


def compare_to_mi(
    gradient: torch.Tensor,
    mi: torch.Tensor,
    parents: Sequence[Sequence[int]],
    include_diagonal: bool = False,
) -> dict[str, torch.Tensor]:
    """Compare the descent direction ``-gradient`` ``[head, T, T]`` with a mutual information ``mi`` ``[T, T]``, row by row.

    Only entries a causal row can use are compared: ``j < i`` (``j <= i`` with
    ``include_diagonal``); the diagonal is left out by default because a token's information
    about itself says nothing about which earlier position is its parent. Returns per head:
    ``argmax_agreement``, the fraction of rows with a parent where both row-argmaxes coincide, and
    ``spearman``, the mean rank correlation over rows with a parent and at least two entries
    (rows where either side is constant are skipped; NaN if none remain).
    """
    H, T, _ = gradient.shape
    mi = check_square(mi, "mi", T).to(gradient.device).double()
    parents = check_parents(parents, T)
    s = -gradient.double()
    agree, rho = [], []
    for i, ps in enumerate(parents):
        n = i + 1 if include_diagonal else i
        if not ps or n < 1:
            continue
        agree.append(s[:, i, :n].argmax(-1) == mi[i, :n].argmax())
        if n >= 2:
            rho.append(spearman(s[:, i, :n], mi[i, :n].expand(H, n)))
    nan = torch.full((H,), float("nan"), dtype=torch.float64)
    agreement = torch.stack(agree, 1).double().mean(1) if agree else nan
    if rho:
        r = torch.stack(rho, 1)
        rho_mean = torch.nanmean(r, 1)
    else:
        rho_mean = nan
    return {"argmax_agreement": agreement, "spearman": rho_mean}


def chi2_mutual_information(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Monte-Carlo chi^2 mutual information between positions, ``[T, T]``.

    ``I[i, j] = sum_{a,b} p_ij(a, b)^2 / (p_i(a) p_j(b)) - 1`` with the empirical joint and
    marginals of ``(s_i, s_j)``. tokens: ``[n, T]`` samples of one distribution, or
    ``[groups, n, T]``: the information is computed within each group and averaged over groups.
    For the in-context task a group is a set of sequences sharing one transition table, which
    gives the theory's prior average of the per-table information (docs/science.md §3); pooling
    sequences with different tables instead measures the dependence the shared table induces,
    which does not peak at the parent.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.ndim not in (2, 3):
        got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens: expected [n, T] or [groups, n, T] token ids, got {got}")
    grouped = check_tokens(tokens.reshape(-1, tokens.shape[-1])).reshape(tokens.shape)
    if grouped.ndim == 2:
        grouped = grouped[None]
    if grouped.max() >= vocab_size:
        raise ValueError(f"tokens: ids must be < vocab_size={vocab_size}, got max {int(grouped.max())}")
    g, n, T = grouped.shape
    onehot = torch.nn.functional.one_hot(grouped, vocab_size).double().reshape(g, n, T * vocab_size)
    joint = (onehot.transpose(1, 2) @ onehot / n).reshape(g, T, vocab_size, T, vocab_size).permute(0, 1, 3, 2, 4)
    marg = onehot.mean(1).reshape(g, T, vocab_size)
    indep = marg[:, :, None, :, None] * marg[:, None, :, None, :]  # [g, i, j, a, b]
    ratio = torch.where(indep > 0, joint.square() / indep.clamp_min(1e-300), torch.zeros_like(joint))
    return (ratio.sum((-1, -2)) - 1).mean(0).float()


class GradientProbe(OwnPassProbe):
    """Per head of ``layer``: the score-bias gradient (:func:`score_bias_gradient`) against a given MI.

    parents: the task's parent list; mi: ``[T, T]`` mutual information (e.g.
    :func:`chi2_mutual_information`), or None to record only the gradient. Needs
    ``targets=`` ``[batch, vocab]`` in the suite's context. Metrics: ``argmax_agreement`` and
    ``spearman`` (:func:`compare_to_mi`), and ``gradient_norm`` whose ``extra["gradient"]`` holds the
    ``[T, T]`` gradient. Runs its own forward and backward pass.
    """

    name = "gradient_mi"

    def __init__(
        self,
        parents: Sequence[Sequence[int]],
        mi: torch.Tensor | None = None,
        layer: int = 0,
        include_diagonal: bool = False,
    ):
        super().__init__([layer])
        self.parents = check_parents(parents)
        T = len(self.parents)
        self.mi = None if mi is None else check_square(mi, "mi", T)
        self.layer, self.include_diagonal = layer, include_diagonal

    def check(self, batch: ProbeBatch) -> None:
        check_parents(self.parents, batch.seq_len, name=f"{self.name}: parents")
        self.layer_list(batch.dims)
        check_distribution(batch.require("targets", self.name), "targets", batch.tokens.shape[0])

    def run(self, model: nn.Module, batch: ProbeBatch) -> list[Record]:
        grad = score_bias_gradient(model, batch.tokens, batch.context["targets"], self.layer, batch.site_map)
        out: list[Record] = []
        cmp = compare_to_mi(grad, self.mi, self.parents, self.include_diagonal) if self.mi is not None else None
        for h in range(grad.shape[0]):
            g = grad[h].cpu()
            out.append(Record(self.name, self.layer, h, "gradient_norm", float(g.norm()), {"gradient": g.tolist()}))
            if cmp is not None:
                out.append(Record(self.name, self.layer, h, "argmax_agreement", float(cmp["argmax_agreement"][h])))
                out.append(Record(self.name, self.layer, h, "spearman", float(cmp["spearman"][h])))
        return out
