"""Helpers for the probes tests: one set of weights, run as a HookedTransformer, a TransformerBridge
and a plain nn.Module, plus an independent float64 reference forward pass.

Weights use HookedTransformer state-dict keys and shapes (``embed.W_E [V, D]``,
``blocks.L.attn.W_Q [H, D, Dh]``, ...). The model is attention-only, no layer norm, standard
positions, scores divided by ``attn_scale``. The bridge always divides by sqrt(d_head) (it ignores
``use_attn_scale=False``), so the shared configurations use ``attn_scale = sqrt(d_head)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn


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


def has_hooked_transformer() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def hooked_transformer(cfg: Config, weights: dict[str, torch.Tensor]):
    """A HookedTransformer (TransformerLens 3 only; skips the test on 4)."""
    if not has_hooked_transformer():
        pytest.skip("HookedTransformer was removed in TransformerLens 4")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tl_cfg = HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, d_head=cfg.d_head, n_heads=cfg.n_heads, n_ctx=cfg.n_ctx,
        d_vocab=cfg.d_vocab, attn_only=True, normalization_type=None, positional_embedding_type="standard",
        use_attn_scale=True, attn_scale=cfg.scale, default_prepend_bos=False, init_weights=False, device="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(tl_cfg)
    sd = model.state_dict()
    assert set(weights) <= set(sd), set(weights) - set(sd)
    sd.update(weights)
    model.load_state_dict(sd)
    return model.eval()


def bridge(cfg: Config, weights: dict[str, torch.Tensor]):
    """A TransformerBridge around TransformerLens's native model, loaded with ``weights``."""
    import einops
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    if not math.isclose(cfg.scale, math.sqrt(cfg.d_head)):
        raise ValueError("the native bridge always divides scores by sqrt(d_head)")
    b = TransformerBridge.boot_native(TransformerBridgeConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, d_head=cfg.d_head, n_heads=cfg.n_heads, n_ctx=cfg.n_ctx,
        d_vocab=cfg.d_vocab, attn_only=True, normalization_type=None, positional_embedding_type="standard",
        seed=0, device="cpu",
    ))
    sd = {"embed.weight": weights["embed.W_E"], "pos_embed.weight": weights["pos_embed.W_pos"],
          "unembed.weight": weights["unembed.W_U"].T, "unembed.bias": weights["unembed.b_U"]}
    for l in range(cfg.n_layers):
        a = f"blocks.{l}.attn"
        for m in "QKV":
            sd[f"{a}.{m.lower()}.weight"] = einops.rearrange(weights[f"{a}.W_{m}"], "h m d -> (h d) m")
            sd[f"{a}.{m.lower()}.bias"] = weights[f"{a}.b_{m}"].reshape(-1)
        sd[f"{a}.o.weight"] = einops.rearrange(weights[f"{a}.W_O"], "h d m -> m (h d)")
        sd[f"{a}.o.bias"] = weights[f"{a}.b_O"]
    b.load_state_dict(sd, strict=True)
    return b.eval()


def reference_forward(
    cfg: Config, weights: dict[str, torch.Tensor], tokens: torch.Tensor, bias: torch.Tensor | None = None,
    taps: "nn.ModuleDict | None" = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Plain-torch forward pass: ``(logits [b, T, V], patterns per layer [b, H, T, T])``.

    bias ``[H, T, T]`` is added to layer 0's scores after masking. ``taps`` (identity modules
    named like ``pattern0``) let :class:`PlainModel` expose activations; the maths is the same.
    """
    w = weights
    tap = (lambda name, x: taps[name](x)) if taps is not None else (lambda name, x: x)
    T = tokens.shape[1]
    x = tap("embed", w["embed.W_E"][tokens]) + tap("pos", w["pos_embed.W_pos"][:T])
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    patterns = []
    for l in range(cfg.n_layers):
        a = f"blocks.{l}.attn"
        x = tap(f"resid_pre{l}", x)
        q = torch.einsum("bpm,hmd->bphd", x, w[f"{a}.W_Q"]) + w[f"{a}.b_Q"]
        k = torch.einsum("bpm,hmd->bphd", x, w[f"{a}.W_K"]) + w[f"{a}.b_K"]
        v = tap(f"v{l}", torch.einsum("bpm,hmd->bphd", x, w[f"{a}.W_V"]) + w[f"{a}.b_V"])
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / cfg.scale
        scores = scores.masked_fill(~mask, float("-inf"))
        if bias is not None and l == 0:
            scores = scores + bias
        scores = tap(f"scores{l}", scores)
        pattern = tap(f"pattern{l}", scores.softmax(-1))
        patterns.append(pattern)
        z = tap(f"z{l}", torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        x = tap(f"resid_post{l}", x + torch.einsum("bqhd,hdm->bqm", z, w[f"{a}.W_O"]) + w[f"{a}.b_O"])
    return x @ w["unembed.W_U"] + w["unembed.b_U"], patterns


class PlainModel(nn.Module):
    """The same function as a plain nn.Module (no TransformerLens), with identity taps for a site map."""

    def __init__(self, cfg: Config, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.cfg_ = cfg  # not `cfg`: probes must find the layers from the site map
        self.w = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v.clone()) for k, v in weights.items()})
        names = ["embed", "pos"] + [f"{n}{l}" for l in range(cfg.n_layers)
                                    for n in ("resid_pre", "v", "scores", "pattern", "z", "resid_post")]
        self.taps = nn.ModuleDict({n: nn.Identity() for n in names})

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = {k.replace("__", "."): v for k, v in self.w.items()}
        return reference_forward(self.cfg_, weights, tokens, taps=self.taps)[0]


def plain_model(cfg: Config, weights: dict[str, torch.Tensor]) -> tuple[PlainModel, dict[str, str]]:
    """``(model, site_map)`` for :class:`PlainModel`."""
    model = PlainModel(cfg, weights)
    site_map = {"hook_embed": "taps.embed", "hook_pos_embed": "taps.pos"}
    for l in range(cfg.n_layers):
        site_map.update({
            f"blocks.{l}.hook_resid_pre": f"taps.resid_pre{l}",
            f"blocks.{l}.attn.hook_v": f"taps.v{l}",
            f"blocks.{l}.attn.hook_attn_scores": f"taps.scores{l}",
            f"blocks.{l}.attn.hook_pattern": f"taps.pattern{l}",
            f"blocks.{l}.attn.hook_z": f"taps.z{l}",
            f"blocks.{l}.hook_resid_post": f"taps.resid_post{l}",
        })
    return model.eval(), site_map


def all_models(cfg: Config, weights: dict[str, torch.Tensor]) -> dict[str, tuple[nn.Module, dict | None]]:
    """Every way available in this TransformerLens version: ``{kind: (model, site_map)}``."""
    models = {}
    if has_hooked_transformer():
        models["hooked_transformer"] = (hooked_transformer(cfg, weights), None)
    models["bridge"] = (bridge(cfg, weights), None)
    models["plain"] = plain_model(cfg, weights)
    return models


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
