"""The paper's disentangled transformer as a TransformerLens ``HookedTransformer`` (docs/science.md §2).

The official ``CatFormer`` embeds ``x_i = [onehot(s_i); onehot(i)]`` (width ``d_0 = S + T``) and
each layer *concatenates* its heads' outputs, ``H <- [H, attn(H; A_1), ..., attn(H; A_m)]`` with
``attn(H; A) = softmax(causal_mask(H A H^T)) H``. Written as an attention-only transformer, the
residual stream is block-structured: the embedding writes block 0, each head writes a fresh
block, and

- ``W_K`` reads the layer's input blocks (identity), ``W_Q`` holds ``A`` there, so the score is
  ``h_i^T A h_j``; no attention scaling, no layer norm, no biases;
- ``W_V`` reads the input blocks (identity) and ``W_O`` writes them into the head's own block;
- the unembedding ``W_U`` is the readout ``W``.

Only ``W_Q`` (the ``A`` blocks) and ``W_U`` are trainable. Entries of ``W_Q`` outside the ``A``
block receive zero gradient because the residual stream and ``W_K`` are zero there, so with a
zero start they stay zero under SGD and AdamW alike. The reduced model of the theorem masks the
gradients further, to the blocks the theorem trains.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp_causal.models.backend import attribute, instantiate
from interp_causal.tasks import InContextTask

INITS = ("zero", "normal")


@dataclass(frozen=True)
class PaperLayout:
    """Widths and offsets of the block-structured residual stream.

    ``widths[l]`` is the width of the stream read by layer ``l`` (``widths[0] = S + T``);
    head ``h`` of layer ``l`` writes columns ``head_block(l, h)``.
    """

    vocab_size: int
    seq_len: int
    heads: tuple[int, ...]

    @property
    def d0(self) -> int:
        return self.vocab_size + self.seq_len

    @property
    def widths(self) -> tuple[int, ...]:
        ws = [self.d0]
        for m in self.heads:
            ws.append(ws[-1] * (1 + m))
        return tuple(ws)

    @property
    def d_model(self) -> int:
        return self.widths[-1]

    @property
    def d_head(self) -> int:
        return self.widths[-2]

    def head_block(self, layer: int, head: int) -> slice:
        d_in = self.widths[layer]
        return slice(d_in * (1 + head), d_in * (2 + head))

    @property
    def token_block(self) -> slice:
        return slice(0, self.vocab_size)

    @property
    def position_block(self) -> slice:
        return slice(self.vocab_size, self.d0)


def _check_heads(heads: object) -> tuple[int, ...]:
    if isinstance(heads, (str, bytes)) or not isinstance(heads, Sequence) or len(heads) == 0:
        raise TypeError(f"heads: expected a sequence of head counts per layer such as (1, 1), got {heads!r}")
    out = tuple(heads)
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in out):
        raise ValueError(f"heads: every layer needs an int >= 1 heads, got {heads!r}")
    return out


def paper_config(task: InContextTask | PaperLayout, heads: Sequence[int] = (1, 1)) -> dict:
    """``HookedTransformerConfig`` keyword arguments of the disentangled transformer for ``task``
    with ``heads`` per layer (or for a ready ``PaperLayout``, whose heads it keeps)."""
    layout = task if isinstance(task, PaperLayout) else PaperLayout(task.vocab_size, task.seq_len, _check_heads(heads))
    return dict(
        n_layers=len(layout.heads),
        d_model=layout.d_model,
        d_head=layout.d_head,
        n_heads=max(layout.heads),
        n_ctx=layout.seq_len,
        d_vocab=layout.vocab_size,
        d_vocab_out=layout.vocab_size,
        attn_only=True,
        normalization_type=None,
        positional_embedding_type="standard",
        use_attn_scale=False,
        default_prepend_bos=False,
        init_weights=False,
        act_fn="relu",
        model_name="paper-disentangled",
    )


def paper_model(
    task: InContextTask,
    heads: Sequence[int] = (1, 1),
    init: str = "zero",
    init_scale: float = 1e-4,
    reduced: bool = False,
    beta0: float = 0.1,
    seed: int = 0,
    backend: str | None = None,
):
    """The disentangled transformer of docs/science.md §2 as a ``HookedTransformer``.

    heads: heads per layer, ``(1, 1)`` for single-parent graphs, ``(2, 1)`` or ``(k, 1)`` for
    ``k`` parents. init: ``"zero"`` (the paper's single-parent runs) or ``"normal"``
    (``init_scale * N(0, 1)`` for every ``A``, the multi-parent runs). A layer with more heads
    than another leaves the missing heads all-zero: they write nothing.

    reduced: the reduced model of the theorem (two layers, one head each). Layer 1 trains only
    its position x position block, layer 2 only its (query token) x (token copied by layer 1)
    block, started at ``beta0 * I``, and the readout is fixed to the identity on the token that
    layer 2 copies.

    backend: ``"hooked"`` (a ``HookedTransformer``, TransformerLens 3) or ``"bridge"`` (a
    ``TransformerBridge``); by default whichever the installed TransformerLens offers.
    """
    layout = PaperLayout(task.vocab_size, task.seq_len, _check_heads(heads))
    if init not in INITS:
        raise ValueError(f"init: expected one of {INITS}, got {init!r}")
    if reduced and layout.heads != (1, 1):
        raise ValueError(f"heads: the reduced model has one head per layer, (1, 1); got {tuple(heads)}")
    weights, trainable = paper_weights(layout, init, init_scale, reduced, beta0, seed)
    return instantiate(paper_config(layout), weights, trainable, backend=backend)


def paper_weights(
    layout: PaperLayout, init: str = "zero", init_scale: float = 1e-4, reduced: bool = False, beta0: float = 0.1, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
    """Weights (``HookedTransformer`` names) and trainable masks of the disentangled transformer."""
    S, T, d0, D, dh = layout.vocab_size, layout.seq_len, layout.d0, layout.d_model, layout.d_head
    n_heads = max(layout.heads)
    gen = torch.Generator().manual_seed(seed)
    w: dict[str, torch.Tensor] = {
        "embed.W_E": torch.zeros(S, D),
        "pos_embed.W_pos": torch.zeros(T, D),
        "unembed.W_U": torch.zeros(D, S),
        "unembed.b_U": torch.zeros(S),
    }
    w["embed.W_E"][:, :S] = torch.eye(S)
    w["pos_embed.W_pos"][:, S:d0] = torch.eye(T)
    trainable: dict[str, torch.Tensor | None] = {"unembed.W_U": None}
    for layer, m in enumerate(layout.heads):
        d_in = layout.widths[layer]
        eye = torch.eye(d_in)
        attn = {k: torch.zeros(n_heads, D, dh) for k in ("W_Q", "W_K", "W_V")}
        attn["W_O"] = torch.zeros(n_heads, dh, D)
        for h in range(m):
            attn["W_K"][h, :d_in, :d_in] = eye
            attn["W_V"][h, :d_in, :d_in] = eye
            attn["W_O"][h, :d_in, layout.head_block(layer, h)] = eye
            if init == "normal":
                attn["W_Q"][h, :d_in, :d_in] = init_scale * torch.randn(d_in, d_in, generator=gen)
        for k, v in attn.items():
            w[f"blocks.{layer}.attn.{k}"] = v
        for k in ("b_Q", "b_K", "b_V"):
            w[f"blocks.{layer}.attn.{k}"] = torch.zeros(n_heads, dh)
        w[f"blocks.{layer}.attn.b_O"] = torch.zeros(D)
        trainable[f"blocks.{layer}.attn.W_Q"] = None

    if reduced:
        d1 = layout.widths[1]
        q_block = (0, slice(S, d0), slice(S, d0))  # layer 1: position x position
        a2_block = (0, slice(0, S), slice(d0, d0 + S))  # layer 2: query token x copied parent token
        w["blocks.0.attn.W_Q"].zero_()
        w["blocks.1.attn.W_Q"].zero_()
        w["blocks.1.attn.W_Q"][a2_block] = beta0 * torch.eye(S)
        w["unembed.W_U"][d1 : d1 + S] = torch.eye(S)
        trainable = {"blocks.0.attn.W_Q": _block_mask(w["blocks.0.attn.W_Q"], q_block),
                     "blocks.1.attn.W_Q": _block_mask(w["blocks.1.attn.W_Q"], a2_block)}  # fmt: skip
    return w, trainable


def _block_mask(like: torch.Tensor, index: tuple) -> torch.Tensor:
    mask = torch.zeros_like(like)
    mask[index] = 1.0
    return mask


# ---- recognising a paper model -----------------------------------------------------------------
# The fixed weights (embeddings, W_K, W_V, W_O, biases) and the config determine the disentangled
# transformer; W_Q (the A blocks) and W_U (the readout) are free. A model is a paper model when its
# fixed weights are exactly a layout's, whoever built it, on either backend, after any reload.
_FIXED = ("W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")
_CFG_KEYS = ("n_layers", "d_model", "d_head", "n_heads", "n_ctx", "d_vocab", "attn_only", "normalization_type",
             "use_attn_scale", "positional_embedding_type")
_recognised: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def paper_layout(model) -> PaperLayout | None:
    """The layout of the disentangled transformer that ``model`` computes, or None when it is not one.

    Read off the model itself (heads per layer: the heads whose ``W_K`` is not zero), then checked:
    the config and every fixed weight must equal the layout's. Cached until a fixed weight changes
    (torch's version counters), so calling it every training step costs a dictionary look-up.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "blocks") or not getattr(cfg, "attn_only", False):
        return None
    try:
        tensors = _fixed_tensors(model)
    except AttributeError:
        return None
    key = tuple((t.data_ptr(), t._version) for t in tensors)
    cached = _recognised.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    layout = _infer_layout(model, cfg, tensors)
    _recognised[model] = (key, layout)
    return layout


def is_paper_model(model) -> bool:
    """``model`` computes the paper's disentangled transformer (see :func:`paper_layout`)."""
    return paper_layout(model) is not None


def _fixed_tensors(model) -> list[torch.Tensor]:
    tensors = [model.W_E, model.W_pos]
    for block in model.blocks:
        tensors += [getattr(block.attn, name) for name in _FIXED]
    return tensors


def _infer_layout(model, cfg, tensors: list[torch.Tensor]) -> PaperLayout | None:
    heads = []
    for block in model.blocks:
        nonzero = [bool(block.attn.W_K[h].detach().any()) for h in range(cfg.n_heads)]
        m = sum(nonzero)
        if m == 0 or any(nonzero[m:]):  # the heads of a layer come first; the rest write nothing
            return None
        heads.append(m)
    try:
        layout = PaperLayout(cfg.d_vocab, cfg.n_ctx, tuple(heads))
    except (TypeError, ValueError):
        return None
    want = paper_config(layout)
    if any(getattr(cfg, k, None) != want[k] for k in _CFG_KEYS):
        return None
    if getattr(cfg, "d_vocab_out", layout.vocab_size) not in (-1, layout.vocab_size):
        return None
    if getattr(cfg, "attn_scores_soft_cap", -1.0) not in (-1, -1.0, None):
        return None
    weights, _ = paper_weights(layout)
    names = ["embed.W_E", "pos_embed.W_pos"] + [f"blocks.{l}.attn.{k}" for l in range(len(heads)) for k in _FIXED]
    for name, t in zip(names, tensors):
        w = weights[name]
        if t.shape != w.shape or not torch.equal(t.detach().cpu().to(w.dtype), w):
            return None
    return layout


def _layout_of(model) -> PaperLayout:
    layout = paper_layout(model)
    if layout is None:
        raise TypeError(f"model: expected the paper's disentangled transformer (paper_model), got a "
                        f"{type(model).__name__} whose fixed weights are not a paper layout's")
    return layout


def attention_matrices(model, layer: int) -> torch.Tensor:
    """The ``A`` matrices of a paper model's layer, ``[heads, d_in, d_in]`` (``W_Q`` read back)."""
    layout = _layout_of(model)
    d_in = layout.widths[layer]
    m = layout.heads[layer]
    return model.blocks[layer].attn.W_Q.detach()[:m, :d_in, :d_in].clone()


def readout(model) -> torch.Tensor:
    """The readout ``W`` ``[d_model, S]`` of a paper model."""
    return model.W_U.detach().clone()


def paper_weights_of(model) -> dict[str, torch.Tensor]:
    """A paper model's weights in ``HookedTransformer`` names, read from either backend (the
    bridge exposes the same names as views): what ``backend.instantiate`` takes to rebuild it."""
    names, _ = paper_weights(_layout_of(model))
    return {name: attribute(model, name).detach().clone() for name in names}
