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


def planted_gpt2(vocab: int = 16, n_ctx: int = 32, strength: float = 30.0, attn_implementation: str = "eager"):
    """A Hugging Face ``GPT2LMHeadModel`` (2 layers x 2 heads, built offline) with a previous-token
    head at L0H1 and an induction head at L1H0; L0H0, L1H1 and the MLPs are all zero.

    GPT-2 normalises the residual before attention, so every code is zero-mean with a fixed norm,
    which makes each LayerNorm a constant scale: token ``t`` is ``e_t - e_{V+t}`` in the token
    block, position ``i`` is ``e_i - e_{N+i}`` in the position block, and L0H1 copies the previous
    token's code into a third block, which L1H0 matches against the query token. Scores are
    ``strength`` on a match, after LayerNorm and the ``1/sqrt(d_head)`` scale.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    V, N = vocab, n_ctx
    tok, pos, prev = 0, 2 * V, 2 * V + 2 * N
    d = 2 * V + 2 * N + 2 * V
    d += d % 2  # two heads
    dh = d // 2
    if dh < max(N, 2 * V):
        raise ValueError(f"vocab, n_ctx: a head of width {dh} cannot hold {N} positions and {2 * V} token slots")
    config = GPT2Config(n_layer=2, n_head=2, n_embd=d, vocab_size=V, n_positions=N, bos_token_id=0,
                        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    config._attn_implementation = attn_implementation
    model = GPT2LMHeadModel(config).eval()
    eps = config.layer_norm_epsilon
    s0 = (4 / d + eps) ** -0.5  # LayerNorm's scale at layer 0: token and position codes, norm^2 = 4
    s1 = ((4 + 2 * s0**2) / d + eps) ** -0.5  # at layer 1, with the copied previous token (norm^2 2 s0^2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in [b.ln_1 for b in model.transformer.h] + [b.ln_2 for b in model.transformer.h] + [model.transformer.ln_f]:
            ln.weight.fill_(1.0)
        for t in range(V):
            model.transformer.wte.weight[t, tok + t], model.transformer.wte.weight[t, tok + V + t] = 1.0, -1.0
        for i in range(N):
            model.transformer.wpe.weight[i, pos + i], model.transformer.wpe.weight[i, pos + N + i] = 1.0, -1.0
        # GPT-2's Conv1D: c_attn.weight [d, 3d] = [W_q | W_k | W_v], head h in columns h*dh:(h+1)*dh
        q, k, v = (slice(j * d + dh, j * d + 2 * dh) for j in range(3))  # head 1 of layer 0
        w0 = model.transformer.h[0].attn.c_attn.weight
        c0 = strength * dh**0.5 / s0**2
        for i in range(N):
            w0[pos + i, q.start + i] = 1.0  # the query at i asks for i ...
        for j in range(N - 1):
            w0[pos + j, k.start + j + 1] = c0  # ... and the key at j answers as j + 1
        for r in range(2 * V):
            w0[tok + r, v.start + r] = 1.0  # the value: the key's token code
            model.transformer.h[0].attn.c_proj.weight[dh + r, prev + r] = 1.0  # written to the prev block
        q, k = slice(0, dh), slice(d, d + dh)  # head 0 of layer 1
        w1 = model.transformer.h[1].attn.c_attn.weight
        c1 = strength * dh**0.5 / (s1**2 * s0)
        for t in range(V):
            w1[tok + t, q.start + t] = 1.0  # the query's token ...
            w1[prev + t, k.start + t] = c1  # ... against the token before the key
    return model


def planted_llama(vocab: int = 16, n_ctx: int = 32, strength: float = 30.0, head_dim: int = 64,
                  attn_implementation: str = "eager"):
    """A Hugging Face ``LlamaForCausalLM`` (2 layers x 2 heads, built offline) with a previous-token
    head at L0H1 and an induction head at L1H0; L0H0, L1H1 and the MLPs are all zero.

    Llama has no position embedding: positions reach attention only through the rotary embedding,
    which turns a query ``a`` at ``i`` and a key ``b`` at ``j`` into ``a . R((j - i) theta) b`` in
    each plane. The previous-token head uses a constant query ``e_1`` and key ``R(theta) e_1`` in
    the fastest planes, so its score ``sum cos((1 - (i - j)) theta)`` peaks at ``j = i - 1``; the
    induction head matches tokens in the slowest planes, where the rotation is nearly the identity
    (``rope_theta = 1e6``). Codes have a fixed norm, so each RMSNorm is a constant scale.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    V, N, dh = vocab, n_ctx, head_dim
    half, fast = dh // 2, 8  # planes k and k + half; the 8 fastest planes make the previous-token score
    tok, const, prev = 0, V, V + 1
    d = 2 * dh
    if V > half - fast or 2 * V + 1 > d:
        raise ValueError(f"vocab: {V} tokens need more than the {half - fast} slow rotary planes of head_dim={dh}")
    config = LlamaConfig(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, hidden_size=d,
                         head_dim=dh, intermediate_size=4 * d, vocab_size=V, max_position_embeddings=N,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6}, bos_token_id=0,
                         eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    config._attn_implementation = attn_implementation
    model = LlamaForCausalLM(config).eval()
    theta = 1.0 / (1e6 ** (torch.arange(0, dh, 2, dtype=torch.float64) / dh))  # [half]
    eps = config.rms_norm_eps
    r0 = (2 / d + eps) ** -0.5  # RMSNorm's scale at layer 0: token and constant, norm^2 = 2
    r1 = (3 / d + eps) ** -0.5  # at layer 1, with the copied previous token
    lag = torch.arange(N, dtype=torch.float64)  # i - j
    score = torch.cos((1 - lag[:, None]) * theta[None, :fast]).sum(-1)  # [lag]
    margin = float(score[1] - torch.cat([score[:1], score[2:]]).max())
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for norm in [b.input_layernorm for b in model.model.layers] + [b.post_attention_layernorm for b in model.model.layers]:
            norm.weight.fill_(1.0)
        model.model.norm.weight.fill_(1.0)
        emb = model.model.embed_tokens.weight
        emb[:, const] = 1.0
        emb[torch.arange(V), tok + torch.arange(V)] = 1.0
        a0 = model.model.layers[0].self_attn  # Linear weights are [out, in]; head h owns rows h*dh:(h+1)*dh
        c0 = strength * dh**0.5 / (r0**2 * margin)
        for k in range(fast):
            a0.q_proj.weight[dh + k, const] = 1.0
            a0.k_proj.weight[dh + k, const] = c0 * float(torch.cos(theta[k]))
            a0.k_proj.weight[dh + half + k, const] = c0 * float(torch.sin(theta[k]))
        for t in range(V):
            a0.v_proj.weight[dh + t, tok + t] = 1.0
            a0.o_proj.weight[prev + t, dh + t] = 1.0 / r0  # the previous token, as a one-hot
        a1 = model.model.layers[1].self_attn
        c1 = strength * dh**0.5 / r1**2
        for t in range(V):
            plane = half - V + t  # slow planes
            a1.q_proj.weight[plane, tok + t] = 1.0
            a1.k_proj.weight[plane, prev + t] = c1
    return model
