"""A standard ``HookedTransformer``'s logits at the last position only: the training forward of
the standard presets (``attn-only``, ``mlp``, ``layernorm``), the same function from the same
parameters with less work.

The loss reads one position, so the last block needs its attention's query, its MLP and the
unembedding at that position alone; only its keys and values are needed everywhere. Every other
block runs as TransformerLens's own module. At batch 1024, ``T = 20``, two layers with an MLP,
that skips about two fifths of the step's arithmetic. :func:`supports` says when the path applies
(the trainer's ``auto`` forward takes it then); the hooked model stays what users, probes and
checkpoints see.
"""

from __future__ import annotations

import torch

from interp_causal.models.backend import lens_classes
from interp_causal.models.structured import has_hooks


def unsupported_reason(model) -> str | None:
    """Why :func:`last_logits` would not compute exactly ``model(tokens)[:, -1]``, or None."""
    hooked = lens_classes()["hooked"]
    if hooked is None:  # TransformerLens 4 removed it: the bridge trains through its own forward
        return "it runs on a HookedTransformer (TransformerLens 3)"
    if not isinstance(model, hooked):
        return f"it runs on a HookedTransformer, and this model is a {type(model).__name__}"
    if has_hooks(model):
        return "the model has hooks attached, which only its own forward runs"
    cfg = model.cfg
    plain = (cfg.positional_embedding_type == "standard" and cfg.normalization_type in (None, "LN")
             and cfg.attn_types is None and not cfg.use_local_attn and not cfg.use_attn_in
             and not cfg.use_split_qkv_input and getattr(cfg, "n_key_value_heads", None) is None
             and not getattr(cfg, "use_qk_norm", False) and (getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0) <= 0
             and (getattr(cfg, "output_logits_soft_cap", -1.0) or -1.0) <= 0 and cfg.original_architecture is None
             and not getattr(cfg, "parallel_attn_mlp", False) and not getattr(cfg, "scale_attn_by_inverse_layer_idx", False))
    if not plain:
        return "its config is not a plain pre-norm transformer with learned positions (TransformerLens's own forward runs it)"
    return None


def supports(model) -> bool:
    return unsupported_reason(model) is None


def last_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """``model(tokens)[:, -1]`` ``[batch, d_vocab_out]`` (call :func:`supports` first)."""
    tokens = tokens.to(model.cfg.device)
    resid = model.embed(tokens) + model.pos_embed(tokens)  # [B, n, d_model]
    for block in model.blocks[:-1]:
        resid = block(resid)
    block = model.blocks[-1]
    x = block.ln1(resid)  # [B, n, d_model]: keys and values at every position
    attn = block.attn
    q = torch.einsum("bd,hde->bhe", x[:, -1], attn.W_Q) + attn.b_Q  # [B, H, d_head]
    k = torch.einsum("bnd,hde->bhne", x, attn.W_K) + attn.b_K[:, None]  # [B, H, n, d_head]
    v = torch.einsum("bnd,hde->bhne", x, attn.W_V) + attn.b_V[:, None]
    # the last query sees every key: no mask
    pattern = (torch.einsum("bhe,bhne->bhn", q, k) / attn.attn_scale).softmax(-1)
    z = torch.einsum("bhn,bhne->bhe", pattern, v)
    mid = resid[:, -1] + torch.einsum("bhe,hed->bd", z, attn.W_O) + attn.b_O  # [B, d_model]
    if not model.cfg.attn_only:
        mid = mid + block.mlp(block.ln2(mid[:, None]))[:, 0]
    if model.cfg.normalization_type is not None:
        mid = model.ln_final(mid[:, None])[:, 0]
    return model.unembed(mid[:, None])[:, 0]
