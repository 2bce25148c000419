"""Helpers for the probes tests: one set of weights, run as a HookedTransformer, a TransformerBridge
and a plain nn.Module, plus an independent reference forward pass.

The configurations and planted weights come from ``probes.testing`` (``Config``, ``PLANTED``,
``planted_weights``, ``random_weights``, ``TokenSeqModel``). The bridge always divides by
sqrt(d_head) (it ignores ``use_attn_scale=False``), so the shared configurations use
``attn_scale = sqrt(d_head)``.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from probes.testing import PLANTED, Config, TokenSeqModel, planted_weights, random_weights

__all__ = ["PLANTED", "Config", "TokenSeqModel", "all_models", "bridge", "has_hooked_transformer",
           "hooked_transformer", "plain_model", "planted_weights", "random_weights", "reference_forward"]


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

    tl_cfg = HookedTransformerConfig(**cfg.hooked_config())
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
    taps: "nn.ModuleDict | None" = None, patterns_set: dict | None = None, z_set: dict | None = None,
    z_out: dict | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Plain-torch forward pass: ``(logits [b, T, V], patterns per layer [b, H, T, T])``.

    bias ``[H, T, T]`` is added to layer 0's scores after masking. ``taps`` (identity modules
    named like ``pattern0``) let :class:`PlainModel` expose activations; the maths is the same.
    Interventions, written out by hand: ``patterns_set`` ``{(layer, head): [b or 1, T, T]}`` replaces
    a head's pattern, ``z_set`` ``{(layer, head): [b or 1, T, d_head]}`` its output; ``z_out``
    receives every layer's ``z`` ``[b, T, H, d_head]``.
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
        for (layer, head), p in (patterns_set or {}).items():
            if layer == l:
                pattern = pattern.clone()
                pattern[:, head] = p
        patterns.append(pattern)
        z = tap(f"z{l}", torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        for (layer, head), value in (z_set or {}).items():
            if layer == l:
                z = z.clone()
                z[:, :, head] = value
        if z_out is not None:
            z_out[l] = z
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
