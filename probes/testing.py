"""Ground truth for checking probes: small transformers with known heads, and TransformerLens's
``detect_head`` on token tensors.

Weights use ``HookedTransformer`` state-dict keys and shapes (``embed.W_E [V, D]``,
``blocks.L.attn.W_Q [H, D, Dh]``, ...); :meth:`Config.hooked_config` gives the matching
``HookedTransformerConfig`` keywords (attention-only, no layer norm, standard positions, scores
divided by ``Config.scale``). :func:`planted_weights` plants a previous-token head and an
induction head, so a probe pipeline can be checked against heads whose roles are known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Config:
    n_layers: int = 2
    n_heads: int = 2
    d_model: int = 16
    d_head: int = 8
    n_ctx: int = 24
    d_vocab: int = 12
    attn_scale: float | None = None  # None: sqrt(d_head)

    @property
    def scale(self) -> float:
        return math.sqrt(self.d_head) if self.attn_scale is None else self.attn_scale

    def hooked_config(self) -> dict:
        """``HookedTransformerConfig`` keyword arguments of this attention-only model."""
        return dict(
            n_layers=self.n_layers, d_model=self.d_model, d_head=self.d_head, n_heads=self.n_heads, n_ctx=self.n_ctx,
            d_vocab=self.d_vocab, attn_only=True, normalization_type=None, positional_embedding_type="standard",
            use_attn_scale=True, attn_scale=self.scale, default_prepend_bos=False, init_weights=False, device="cpu",
        )


def random_weights(cfg: Config, seed: int = 0, std: float = 0.5) -> dict[str, torch.Tensor]:
    """Random weights and biases (all non-zero), HookedTransformer keys."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: std * torch.randn(*shape, generator=g)  # noqa: E731
    L, H, D, Dh, V = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab
    w = {"embed.W_E": r(V, D), "pos_embed.W_pos": r(cfg.n_ctx, D), "unembed.W_U": r(D, V), "unembed.b_U": r(V)}
    for l in range(L):
        for m in "QKV":
            w[f"blocks.{l}.attn.W_{m}"] = r(H, D, Dh)
            w[f"blocks.{l}.attn.b_{m}"] = r(H, Dh)
        w[f"blocks.{l}.attn.W_O"] = r(H, Dh, D)
        w[f"blocks.{l}.attn.b_O"] = r(D)
    return w


PLANTED = Config(n_layers=2, n_heads=2, d_model=16 + 33 + 16 + 16, d_head=33, n_ctx=33, d_vocab=16)


def planted_weights(strength: float = 30.0) -> dict[str, torch.Tensor]:
    """A previous-token head at L0H1 and an induction head at L1H0; L0H0 and L1H1 are all zero.

    Residual blocks: token one-hot, position one-hot, the previous token (written by L0H1), the
    copied token (written by L1H0, read by the unembedding). Scores are ``strength`` on a match
    after the attention scale.
    """
    cfg = PLANTED
    V, N = cfg.d_vocab, cfg.n_ctx
    tok, pos, prev, out = 0, V, V + N, V + N + V
    c = strength * cfg.scale
    w = {k: torch.zeros_like(v) for k, v in random_weights(cfg).items()}
    w["embed.W_E"][:, tok:tok + V] = torch.eye(V)
    w["pos_embed.W_pos"][:, pos:pos + N] = torch.eye(N)
    # L0H1: query position i matches key position j when j + 1 == i; copies the key's token.
    for i in range(N):
        w["blocks.0.attn.W_Q"][1, pos + i, i] = 1.0
    for j in range(N - 1):
        w["blocks.0.attn.W_K"][1, pos + j, j + 1] = c
    for t in range(V):
        w["blocks.0.attn.W_V"][1, tok + t, t] = 1.0
        w["blocks.0.attn.W_O"][1, t, prev + t] = 1.0
    # L1H0: query token t matches a key whose previous token is t; copies the key's token to the output.
    for t in range(V):
        w["blocks.1.attn.W_Q"][0, tok + t, t] = 1.0
        w["blocks.1.attn.W_K"][0, prev + t, t] = c
        w["blocks.1.attn.W_V"][0, tok + t, t] = 1.0
        w["blocks.1.attn.W_O"][0, t, out + t] = 1.0
        w["unembed.W_U"][out + t, t] = 1.0
    return w


class TokenSeqModel:
    """Lets TransformerLens ``detect_head`` (strings only) run on token tensors.

    detect_head uses only ``.cfg``, ``.to_tokens(seq)`` and ``.run_with_cache(tokens, remove_batch_dim=True)``;
    here a "string" is a key into a dict of token rows.
    """

    def __init__(self, model, tokens: torch.Tensor):
        self.model, self.cfg = model, model.cfg
        self.seqs = {f"s{i}": tokens[i : i + 1] for i in range(tokens.shape[0])}

    def to_tokens(self, key, *args, **kwargs):
        if isinstance(key, list):
            return torch.cat([self.seqs[k] for k in key])
        return self.seqs[key]

    def run_with_cache(self, *args, **kwargs):
        return self.model.run_with_cache(*args, **kwargs)
