"""A structured training path for the paper's disentangled transformer (docs/science.md §2).

The ``HookedTransformer`` view of the paper model is dense: width ``d_model = 4 (S + T)``, every
projection a full matmul, about 7 GFLOP per training step at batch 1024 (S = 10, T = 20). The
function it computes has far less work in it: the input is one-hot, ``W_K``, ``W_V``, ``W_O`` only
copy blocks, and the loss reads the last position only. This module computes the *same function
from the same ``Parameter`` tensors*:

- layer 1 at every position: with ``h_i = [onehot(s_i); onehot(i)]`` the score is
  ``h_i^T A h_j = A[s_i, s_j] + A[s_i, S + j] + A[S + i, s_j] + A[S + i, S + j]``, read off the rows
  of ``A`` by index (no matmul with the one-hot inputs); each head appends
  ``softmax(causal(scores)) H`` to the residual stream, i.e. its attention-weighted token
  histogram and its attention row; for small vocabularies the patterns are never formed, and
  layer 2 reads them through matrix products with ``exp`` of the score table (:class:`_Tables`);
- middle layers (models deeper than two) densely, at every position;
- the last layer at the last position only, and the readout ``W`` there only.

For the two-layer model on the CPU (float32, no head interventions) the layers run as one compiled
kernel (:mod:`interp_causal.models.native`), the same function one sequence at a time; the torch
ops below are its fallback, and the path for deeper models, other devices and interventions.

``A`` is read as the slice ``blocks[l].attn.W_Q[h, :d_l, :d_l]`` and ``W`` as ``unembed.W_U``, so
gradients land in the hooked model's own parameters (gradient-mask hooks of the reduced model
apply as usual), no weights are ever copied or synchronised, and the hooked model stays the
object that users, probes and checkpoints see.

:func:`supports` says when the path applies: a ``HookedTransformer`` or a ``TransformerBridge``
(TransformerLens 4's model, whose ``W_Q`` and ``W_U`` are differentiable views of its own weights)
with no hook attached that :func:`~interp_causal.models.paper.is_paper_model` recognises (every fixed weight still at its
layout's value). The trainer chooses its forward explicitly (``Trainer(forward=...)``): ``auto``
takes this path exactly when :func:`supports` holds, ``structured`` insists on it,
``hooked`` never takes it.
"""

from __future__ import annotations

import torch

from interp_causal.models import native
from interp_causal.models.backend import lens_classes
from interp_causal.models.paper import is_paper_model, paper_layout


def unsupported_reason(model, hooks_allowed: bool = False) -> str | None:
    """Why :func:`last_logits` would not compute exactly ``model(tokens)[:, -1]``, or None when it
    does. ``hooks_allowed``: the hooks attached are head interventions that ``last_logits`` is given
    as ``patterns`` (see :func:`intervention_reason`)."""
    if not _is_transformer_lens_model(model):
        return f"it runs on a HookedTransformer or a TransformerBridge, and this model is a {type(model).__name__}"
    if has_hooks(model) and not hooks_allowed:
        return "the model has hooks attached, which only its own forward runs"
    if not is_paper_model(model):
        return "the model is not the paper's disentangled transformer (its fixed weights or config differ)"
    return None


def intervention_reason(model) -> str | None:
    """Why :func:`last_logits` cannot run head interventions (``patterns=``) on ``model``, or None."""
    reason = unsupported_reason(model, hooks_allowed=True)
    if reason is None and len(paper_layout(model).heads) != 2:
        reason = "head interventions on the structured path need the two-layer paper model"
    return reason


def supports(model) -> bool:
    """True when :func:`last_logits` computes exactly ``model(tokens)[:, -1]`` for ``model``."""
    return unsupported_reason(model) is None


def has_hooks(model) -> bool:
    """Any forward or backward hook on the model or one of its hook points.

    Reads torch's own hook dictionaries: TransformerLens lists the hooks added through
    ``add_hook`` / ``hooks()``, but a hook registered straight through ``register_forward_hook``
    appears only in torch's dictionaries, and both must send training to the generic forward.
    """
    if model._forward_hooks or model._forward_pre_hooks:
        return True
    return any(hp._forward_hooks or hp._backward_hooks or hp._forward_pre_hooks for hp in model.hook_dict.values())


def _is_transformer_lens_model(model) -> bool:
    return isinstance(model, tuple(c for c in lens_classes().values() if c is not None))


def last_logits(model, tokens: torch.Tensor, patterns: dict | None = None) -> torch.Tensor:
    """``model(tokens)[:, -1]`` ``[batch, S]`` of a paper model, computed structurally (see the
    module docstring; call :func:`supports` first). Differentiable in ``W_Q`` and ``W_U``.

    ``patterns``: ``{(layer, head): [batch, n, n]}``, the attention pattern each of those heads uses
    instead of its own (a clamp; all zeros is a zero ablation, since a head's output is its pattern
    times its values and the paper model has no biases): the function the hooked model computes
    with ``probes.interventions.Clamp`` / ``Ablate`` attached. Two-layer models only
    (:func:`intervention_reason`)."""
    layout = paper_layout(model)
    tokens = tokens.to(model.unembed.W_U.device)
    if len(layout.heads) == 2:
        return _two_layers(model, layout, tokens, patterns or {})
    if patterns:
        raise ValueError("patterns: head interventions on the structured path need the two-layer paper model")
    return _dense(model, layout, tokens)


def stacked_last_logits(models: list, tokens: torch.Tensor) -> torch.Tensor:
    """``[model(tokens[k])[:, -1] for k, model in enumerate(models)]`` as one computation, ``[K, batch, S]``
    from ``tokens`` ``[K, batch, n]``: ``K`` two-layer paper models of one layout (same ``S``, ``T``,
    heads; each passing :func:`supports`) whose weights are stacked, so one forward and backward
    serve all of them, and each model's gradients land in its own parameters."""
    if not models:
        raise ValueError("models: expected at least one paper model, got none")
    for k, model in enumerate(models):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"models[{k}]: the stacked path cannot run it: {reason}")
    layouts = [paper_layout(model) for model in models]
    if any(layout != layouts[0] for layout in layouts) or len(layouts[0].heads) != 2:
        raise ValueError(f"models: expected two-layer paper models of one layout, got layouts "
                         f"{sorted({str(layout) for layout in layouts})}")
    if tokens.dim() != 3 or tokens.shape[0] != len(models):
        raise ValueError(f"tokens: expected [K={len(models)}, batch, n], got shape {list(tokens.shape)}")
    layout = layouts[0]
    (m0, m1), d0, w1 = layout.heads, layout.d0, layout.widths[1]
    weights = (torch.stack([m.blocks[0].attn.W_Q[:m0, :d0, :d0] for m in models]),
               torch.stack([m.blocks[1].attn.W_Q[:m1, :w1, :w1] for m in models]),
               torch.stack([m.unembed.W_U for m in models]), torch.stack([m.unembed.b_U for m in models]))
    return _two_layers_of(weights, layout, tokens.to(weights[0].device), {})


def _two_layers(model, layout, x: torch.Tensor, patterns: dict) -> torch.Tensor:
    """The paper's two-layer model without ever forming the residual stream at every position.

    Layer 1 (heads ``h``, patterns ``a^h`` ``[B, n, n]``) writes at position ``j`` the block
    ``[hist^h_j; a^h_j]`` with ``hist^h_j = sum_k a^h_jk onehot(s_k)``. Layer 2 at the query ``q``,
    head ``g``, with ``v = h_q A_g``, scores ``j`` by ``v_tok[s_j] + v_pos[j] + sum_h a^h_j . c^h``
    where ``c^h_k = v_hist^h[s_k] + v_a^h[k]``; its output ``p H`` is
    ``[scatter(p); p; scatter(p a^h); p a^h ...]`` (``scatter`` sums weights per token).
    """
    m0, m1 = layout.heads
    weights = (model.blocks[0].attn.W_Q[:m0, : layout.d0, : layout.d0],
               model.blocks[1].attn.W_Q[:m1, : layout.widths[1], : layout.widths[1]],
               model.unembed.W_U, model.unembed.b_U)
    # contiguous, as stacked_last_logits's torch.stack makes them: a TransformerBridge's W_Q and
    # W_U are transposed views, and the matrix products' rounding follows the layout, so without
    # this one model alone and the same model stacked differ by ~1e-9 in their gradients, which
    # AdamW turns into visible steps; with it both are bit-identical on either TransformerLens line
    return _two_layers_of(tuple(w.contiguous() for w in weights), layout, x, patterns)


def _two_layers_of(weights: tuple, layout, x: torch.Tensor, patterns: dict) -> torch.Tensor:
    """:func:`_two_layers` from the weights ``(A1, A2, W_U, b_U)``; with a leading model dimension
    on each of them and on ``x`` (``[K, B, n]``), ``K`` models' logits ``[K, B, S]`` as one computation."""
    A0, A1, W_U, b_U = weights
    S, T = layout.vocab_size, layout.seq_len
    K = x.shape[:-2]
    if not patterns and native.applies(weights, x):
        _check_tokens(x, S, T)  # the kernel indexes memory with them
        if K:
            return native.PaperTwoLayers.apply(A0, A1, W_U, b_U, x, S, T)
        # a view, not [0]: indexing's backward would zero-fill and copy the whole output every step
        logits = native.PaperTwoLayers.apply(A0[None], A1[None], W_U[None], b_U[None], x[None], S, T)
        return logits.view(logits.shape[1:])
    final = _final_in_torch(A0, A1, layout, x, patterns)
    return torch.addmm(b_U, final, W_U) if not K else torch.baddbmm(b_U[:, None, :], final, W_U)


def _final_in_torch(A0: torch.Tensor, A1: torch.Tensor, layout, x: torch.Tensor, patterns: dict) -> torch.Tensor:
    """The residual stream at the last position ``[*K, B, d_model]`` in torch ops (what the kernel
    computes where it applies; here also with head interventions ``patterns``)."""
    S, T, d0 = layout.vocab_size, layout.seq_len, layout.d0
    m0, m1 = layout.heads
    w1 = layout.widths[1]
    *K, B, n = x.shape
    # ---- layer 1: scores[h, b, i, j] = h_i^T A_h h_j = Q_h[(i, s_i), (j, s_j)], one lookup in the
    # table Q_h[i, x, j, y] = A[x, y] + A[x, S + j] + A[S + i, y] + A[S + i, S + j] (+ causal mask),
    # position-major: a sequence's one-hot rows [n, S] flatten to the table's index without a copy
    A_tt, A_tp, A_pt = A0[..., :S, :S], A0[..., :S, S : S + n], A0[..., S : S + n, :S]
    A_pp = A0[..., S : S + n, S : S + n] + _causal_mask(n, x.device)
    Q = (A_tt[..., None, :, None, :] + A_tp[..., None, :, :, None] + A_pt[..., :, None, None, :]
         + A_pp[..., :, None, :, None])  # [*K, m0, n, S, n, S]
    layer1 = _Tables.attempt(Q, x) if not patterns and S <= TABLES_MAX_VOCAB else None
    if layer1 is None:
        layer1 = _Gathered(Q, x, patterns)
    a_query = layer1.query_rows()

    # ---- the residual stream at the query, h_q = [onehot(s_q); e_q; hist^h_q; a^h_q ...]  [*K, B, w1]
    pad = (0, T - n)
    parts = [_position(x[..., -1], S, x.device), _position(torch.full_like(x[..., -1], n - 1), T, x.device)]
    for aq in a_query:  # [*K, B, n]
        parts += [_scatter(aq, x, S), _pad(aq, pad)]
    hq = torch.cat(parts, dim=-1)

    # ---- layer 2 at the query: v = h_q A_g  [*K, B, m1, w1]
    v = (hq @ A1.transpose(-3, -2).reshape(*K, w1, m1 * w1)).view(*K, B, m1, w1)
    outs = [hq]
    for g in range(m1):
        vg = v[..., g, :]
        score = vg[..., :S].gather(-1, x) + vg[..., S : S + n]  # [*K, B, n]
        for h in range(m0):
            off = d0 * (1 + h)
            c = vg[..., off : off + S].gather(-1, x) + vg[..., off + S : off + S + n]  # [*K, B, n]
            score = score + layer1.times(h, c)
        p = score.softmax(-1) if (1, g) not in patterns else patterns[1, g][:, -1].to(score)  # the query's attention
        outs += [_scatter(p, x, S), _pad(p, pad)]
        for h in range(m0):
            r = layer1.weighted_rows(h, p)  # [*K, B, n]: p a^h
            outs += [_scatter(r, x, S), _pad(r, pad)]
    return torch.cat(outs, dim=-1)  # [*K, B, w1 (1 + m1)] = [*K, B, d_model]


def _check_tokens(x: torch.Tensor, S: int, T: int) -> None:
    if x.shape[-1] > T or x.shape[-1] < 1:
        raise ValueError(f"tokens: expected 1 to {T} positions, got shape {list(x.shape)}")
    low, high = (int(v) for v in torch.aminmax(x))
    if low < 0 or high >= S:
        raise ValueError(f"tokens: expected values in [0, {S}), got values from {low} to {high}")


# Layer 1 by tables (:class:`_Tables`) up to this vocabulary size, by gathered patterns above it:
# the tables' matrix products grow as S^2, the patterns' passes do not. Training step at batch
# 1024, one thread: S = 3, T = 20: 3.9 ms against 6.5; S = 5, T = 32, heads (2, 1): 18.7 against
# 27.1; S = 10, T = 20: 13.2 against 6.0.
TABLES_MAX_VOCAB = 5


class _Gathered:
    """Layer 1's patterns ``a^h`` ``[*K, B, n, n]``, every score looked up in ``Q`` ``[*K, m0, n, S, n, S]``."""

    def __init__(self, Q: torch.Tensor, x: torch.Tensor, patterns: dict) -> None:
        *K, m0, n, S = Q.shape[:-2]
        B = x.shape[-2]
        # one flat table per head, the models' tables one after another: model k's pairs at k (n S)^2
        Q = Q.movedim(-5, 0).reshape(m0, -1)
        pairs = _pair_index(x, S)  # [*K, B, n, n]
        if K:
            pairs = pairs + (torch.arange(K[0], device=x.device) * (S * n) ** 2).view(-1, 1, 1, 1)
        self.a = list(Q.index_select(1, pairs.reshape(-1)).view(m0, *K, B, n, n).softmax(-1).unbind(0))
        # the query's row again, on its own: reading it out of ``a`` would cost a dense zero-filled
        # gradient of ``a`` in the backward pass
        self.a_query = list(Q.index_select(1, pairs[..., -1, :].reshape(-1)).view(m0, *K, B, n).softmax(-1).unbind(0))
        for (layer, h), P in patterns.items():
            if layer == 0:
                self.a[h] = P.to(self.a[h])
                self.a_query[h] = self.a[h][..., -1, :]

    def query_rows(self) -> list[torch.Tensor]:
        return self.a_query

    # broadcast multiply-and-sum, not batched matrix-vector products: bmm's speed on 1024 [20, 20]
    # matrices depends on the BLAS and the CPU (MKL on an AMD EPYC: chain step 13.8 ms with bmm
    # against 12.3; an earlier machine gave bmm 4.8 against 6.3), and some of its backward's
    # transposed layouts fall back to a loop over the batch
    def times(self, h: int, c: torch.Tensor) -> torch.Tensor:
        return (self.a[h] * c[..., None, :]).sum(-1)

    def weighted_rows(self, h: int, p: torch.Tensor) -> torch.Tensor:
        return (p[..., :, None] * self.a[h]).sum(-2)


class _Tables:
    """Layer 1's patterns never formed: ``a^h[b, j, k] = E_h[(j, s_j), (k, s_k)] / Z_h[b, j]`` with
    ``E_h = exp(Q_h - rowmax)`` ``[n S, n S]``, so ``a^h c`` and ``p a^h`` are matrix products of
    ``E_h`` with sparse-as-dense ``[B, n S]`` rows (``c`` or ``p`` placed at ``(k, s_k)``), and
    ``Z_h`` is ``E_h`` times the rows of ones. Dense matrix products instead of a dozen passes
    over ``[B, n, n]``: faster for small ``S`` (``TABLES_MAX_VOCAB``)."""

    # a row's normaliser below this: its own scores lie far under its table row's largest, and
    # exp underflowed; :meth:`attempt` then leaves the batch to the gathered patterns
    TINY = 1e-20

    @classmethod
    def attempt(cls, Q: torch.Tensor, x: torch.Tensor) -> "_Tables | None":
        tables = cls(Q, x)
        return tables if all(float(Z.detach().amin()) >= cls.TINY for Z in tables.Z) else None

    def __init__(self, Q: torch.Tensor, x: torch.Tensor) -> None:
        *K, m0, n, S = Q.shape[:-2]
        # position 0 attends to itself alone, whatever Q: its rows get no gradient (E / Z's rounding
        # would give them one of ~1e-9, which AdamW would turn into full steps)
        Q = torch.cat([Q[..., :1, :, :, :].detach(), Q[..., 1:, :, :, :]], dim=-4).reshape(*K, m0, n * S, n * S)
        # the softmax is the same for any constant per row (j, s_j): the row's max keeps exp finite
        self.E = (Q - Q.amax(-1, keepdim=True).detach()).exp().unbind(-3)  # m0 x [*K, n S, n S]
        self.onehot = torch.nn.functional.one_hot(x, S).to(Q.dtype)  # [*K, B, n, S]
        self.index = torch.arange(n, device=x.device) * S + x  # [*K, B, n]: (j, s_j) as a row (or column) of E
        self.select = self.onehot.flatten(-2)  # [*K, B, n S]: 1 at (k, s_k)
        self.Z = [(self.select @ E.transpose(-1, -2)).gather(-1, self.index) for E in self.E]  # [*K, B, n] each

    def _spread(self, c: torch.Tensor) -> torch.Tensor:
        """``[*K, B, n S]``: ``c[b, k]`` at column ``(k, s_k)``, 0 elsewhere."""
        return (self.onehot * c[..., None]).flatten(-2)

    def query_rows(self) -> list[torch.Tensor]:
        q = self.index[..., -1:]  # [*K, B, 1]
        rows = [E.gather(-2, q.expand(*q.shape[:-1], E.shape[-1])) if q.dim() > 2 else E.index_select(0, q[:, 0])
                for E in self.E]  # [*K, B, n S]: the query's row of each table
        return [r.gather(-1, self.index) / Z[..., -1:] for r, Z in zip(rows, self.Z)]

    def times(self, h: int, c: torch.Tensor) -> torch.Tensor:
        return (self._spread(c) @ self.E[h].transpose(-1, -2)).gather(-1, self.index) / self.Z[h]

    def weighted_rows(self, h: int, p: torch.Tensor) -> torch.Tensor:
        return (self._spread(p / self.Z[h]) @ self.E[h]).gather(-1, self.index)


def _scatter(weights: torch.Tensor, x: torch.Tensor, S: int) -> torch.Tensor:
    """``[*K, B, S]``: the weights ``[*K, B, n]`` summed per token ``x`` ``[*K, B, n]``."""
    return torch.zeros(*x.shape[:-1], S, device=x.device, dtype=weights.dtype).scatter_add(-1, x, weights)


def _pad(t: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    return t if pad[1] == 0 else torch.nn.functional.pad(t, pad)


def _position(i: torch.Tensor, T: int, device) -> torch.Tensor:
    """``[*K, B, T]``: one-hot rows at ``i`` ``[*K, B]``."""
    return torch.zeros(*i.shape, T, device=device).scatter_(-1, i[..., None], 1.0)


def _pair_index(x: torch.Tensor, S: int) -> torch.Tensor:
    """Flat index ``((i S + s_i) n + j) S + s_j`` ``[*K, B, n, n]`` of the pairs ``(i, j)`` in ``Q``."""
    n = x.shape[-1]
    col = torch.arange(n, device=x.device) * S + x  # [*K, B, n]
    return col[..., :, None] * (n * S) + col[..., None, :]


_MASKS: dict = {}


def _causal_mask(n: int, device) -> torch.Tensor:
    """``[n, n]`` additive mask: ``-inf`` where the key comes after the query, else 0."""
    key = (n, str(device))
    if key not in _MASKS:
        upper = torch.ones(n, n, dtype=torch.bool, device=device).triu_(1)
        _MASKS[key] = torch.zeros(n, n, device=device).masked_fill_(upper, float("-inf"))
    return _MASKS[key]


def _dense(model, layout, tokens: torch.Tensor) -> torch.Tensor:
    """Any depth: the residual stream written densely at every position for all layers but the
    last, which runs at the last position only."""
    S, T, heads = layout.vocab_size, layout.seq_len, layout.heads
    B, n = tokens.shape
    mask = _causal_mask(n, tokens.device)
    H = _embed(tokens, S, T, tokens.device)  # [B, n, d0]
    for layer in range(len(heads) - 1):
        w, m = layout.widths[layer], heads[layer]
        A = model.blocks[layer].attn.W_Q[:m, :w, :w]
        scores = torch.einsum("biw,mwv,bjv->bmij", H, A, H) + mask
        out = scores.softmax(-1) @ H[:, None]  # [B, m, n, w]
        H = torch.cat([H, *out.unbind(1)], dim=-1)
    last = len(heads) - 1
    w, m = layout.widths[last], heads[last]
    A = model.blocks[last].attn.W_Q[:m, :w, :w]
    hq = H[:, -1]  # [B, w]
    v = torch.einsum("bw,mwv->bmv", hq, A)  # [B, m, w]
    p = torch.einsum("bmw,bjw->bmj", v, H).softmax(-1)  # [B, m, n]: the query's attention
    out = torch.einsum("bmj,bjw->bmw", p, H)
    final = torch.cat([hq, out.reshape(B, m * w)], dim=-1)  # [B, d_model]
    return torch.addmm(model.unembed.b_U, final, model.unembed.W_U)


def _embed(tokens: torch.Tensor, S: int, T: int, device) -> torch.Tensor:
    """The residual stream after the embeddings, ``[B, n, S + T]``: ``[onehot(s_i); onehot(i)]``."""
    B, n = tokens.shape
    H = torch.zeros(B, n, S + T, device=device)
    H.scatter_(2, tokens[:, :, None], 1.0)
    H[:, :, S : S + n] += torch.eye(n, device=device)
    return H
