"""Numbers a report reads off a trained model: learned position attention, batch-averaged
attention, how much of it lands on the true parents, and where the theory expects the second
layer's and the readout's weights (docs/science.md §3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp_causal.tasks import CausalGraph


def position_attention(model, layer: int = 0) -> torch.Tensor:
    """``softmax`` of the position x position block of a paper model's ``A`` per head, causally
    masked: ``[heads, T, T]`` (the "learned graph" the paper plots)."""
    from interp_causal.models import attention_matrices, paper_layout

    layout = paper_layout(model)
    S, T = layout.vocab_size, layout.seq_len
    block = attention_matrices(model, layer)[:, S : S + T, S : S + T]
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    return block.masked_fill(mask, float("-inf")).softmax(-1)


@torch.no_grad()
def mean_pattern(model, tokens: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """The attention pattern of ``layer`` averaged over a batch ``[batch, T]``: ``[heads, T, T]``."""
    from probes import run_with_sites

    site = f"blocks.{layer}.attn.hook_pattern"
    was = model.training
    model.eval()
    try:
        _, acts = run_with_sites(model, tokens, [site])
    finally:
        model.train(was)
    return acts[site].float().mean(0)


def parent_scores(attention: torch.Tensor, graph: CausalGraph) -> list[dict]:
    """Per head of ``attention`` ``[heads, T, T]``: mass on the parents and row-argmax accuracy over
    the positions with parents, overall and per parent slot (``mass_parent0`` ...), with the mass by position."""
    from probes.attention import parent_attention_records

    out: list[dict] = [{} for _ in range(attention.shape[0])]
    for r in parent_attention_records("attention", 0, attention[None], graph.parent_lists()):
        out[r.head][r.metric] = r.value
        if "per_position" in r.extra:
            out[r.head][r.metric + "_per_position"] = r.extra["per_position"]
    return out


def head_slots(scores: list[dict], graph: CausalGraph) -> list[int]:
    """For each first-layer head, the parent slot it attends to most (0 for single-parent graphs)."""
    from probes import max_parents

    k = max_parents(graph.parent_lists())
    if k == 1:
        return [0] * len(scores)
    return [max(range(k), key=lambda r: s.get(f"mass_parent{r}", 0.0)) for s in scores]


def token_blocks(layout) -> list[tuple[str, int]]:
    """``(name, start)`` of every block of the final residual stream that holds a token
    distribution (``S`` wide): the token itself, each first-layer head's copy, and the second
    layer's copies of those. The theory's weights live between these blocks."""
    S, d0, w1 = layout.vocab_size, layout.d0, layout.widths[1]
    first = [("token", 0)] + [(f"head {h} copy", d0 * (1 + h)) for h in range(layout.heads[0])]
    second = []
    for g in range(layout.heads[1]):
        base = w1 * (1 + g)
        second += [(f"L2 copy of {name}" if name != "token" else "L2 copy", base + start) for name, start in first]
    return first + second


def predicted_blocks(layout, graph: CausalGraph, slots: Sequence[int]):
    """Where the theory puts the second layer's ``A`` and the readout ``W`` (docs/science.md §3), in the
    coordinates of :func:`token_blocks` (block ``k`` spans ``[k S, (k + 1) S)``): returns
    ``(a2_index, w_index, a2_outlines, w_outlines, ticks)``, the indices selecting the token
    blocks of ``A(2)`` (``[w1, w1]``) and of ``W``'s rows.

    Layer 2 at the query matches, for every first-layer head ``h`` (copying parent slot ``r``), the
    token of the target's ``r``-th parent as the query holds it (its own token when that parent is
    the query position itself, else head ``h``'s copy) against the key's copy by head ``h``. The
    readout reads the token that layer 2 copies."""
    S, T = layout.vocab_size, layout.seq_len
    blocks_ = token_blocks(layout)
    n_first = 1 + layout.heads[0]
    index = lambda bs: torch.cat([torch.arange(start, start + S) for _, start in bs])  # noqa: E731
    a2_outlines = []
    for h, r in enumerate(slots):
        q = 0 if graph.target_parents[r] == T - 1 else 1 + h
        a2_outlines.append((q * S, (q + 1) * S, (1 + h) * S, (2 + h) * S, f"head {h}"))
    w_outlines = [(n_first * S, (n_first + 1) * S, 0, S, "L2 copy")]
    ticks = [(k * S, name) for k, (name, _) in enumerate(blocks_)]
    return index(blocks_[:n_first]), index(blocks_), a2_outlines, w_outlines, ticks
