"""Named model configurations for a task: the paper's models and standard transformer presets."""

from __future__ import annotations

from collections.abc import Callable

from interp_causal.models.backend import instantiate
from interp_causal.models.paper import paper_model
from interp_causal.tasks import InContextTask

POSITIONAL = ("standard", "rotary")
# heads narrower than this train poorly: 3 layers x 4 heads at d_model 32 (S + T = 30 rounded up)
# end 3.2% above Bayes on the chain in 1000 steps, at d_model 64 0.8%
MIN_DEFAULT_D_HEAD = 16


def standard_config(
    task: InContextTask,
    n_layers: int = 2,
    n_heads: int = 1,
    d_model: int | None = None,
    mlp: bool = False,
    layernorm: bool = False,
    positional: str = "standard",
    seed: int = 0,
) -> dict:
    """``HookedTransformerConfig`` keyword arguments of a standard transformer for ``task``.

    d_model defaults to ``S + T`` rounded up to a multiple of ``n_heads`` (the width the paper's
    standard transformer uses), and at least ``MIN_DEFAULT_D_HEAD`` per head; each head gets
    ``d_model // n_heads``.
    """
    for name, value, low in (("n_layers", n_layers, 1), ("n_heads", n_heads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if positional not in POSITIONAL:
        raise ValueError(f"positional: expected one of {POSITIONAL}, got {positional!r}")
    if d_model is None:
        d_model = max(-(-(task.vocab_size + task.seq_len) // n_heads) * n_heads, MIN_DEFAULT_D_HEAD * n_heads)
    if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < n_heads or d_model % n_heads:
        raise ValueError(f"d_model: expected a positive multiple of n_heads={n_heads}, got {d_model!r}")
    d_head = d_model // n_heads
    if positional == "rotary" and d_head % 2:
        raise ValueError(f"d_model: rotary positions need an even head width, got d_head={d_head}")
    cfg = dict(
        n_layers=n_layers,
        d_model=d_model,
        d_head=d_head,
        n_heads=n_heads,
        n_ctx=task.seq_len,
        d_vocab=task.vocab_size,
        d_vocab_out=task.vocab_size,
        attn_only=not mlp,
        normalization_type="LN" if layernorm else None,
        positional_embedding_type=positional,
        default_prepend_bos=False,
        act_fn="relu",
        seed=seed,
        model_name="interp-causal-standard",
    )
    if mlp:
        cfg["d_mlp"] = 4 * d_model
    if positional == "rotary":
        # the bridge's native rotary pairs adjacent dimensions; match it so both backends agree
        cfg.update(rotary_dim=d_head, rotary_adjacent_pairs=True)
    return cfg


def standard_model(task: InContextTask, backend: str | None = None, **kwargs):
    """A randomly initialised (seeded) TransformerLens model; see ``standard_config`` for options."""
    return instantiate(standard_config(task, **kwargs), backend=backend)


# the standard presets: standard_config's options each one sets; any of them can be overridden
STANDARD_PRESETS: dict[str, dict] = {
    "attn-only": {},
    "mlp": {"mlp": True},
    "layernorm": {"mlp": True, "layernorm": True},
    "rotary": {"positional": "rotary"},
}
STANDARD_OPTIONS = ("n_layers", "n_heads", "d_model", "mlp", "layernorm", "positional", "seed")


def _standard_preset(name: str) -> Callable:
    return lambda task, **kw: standard_model(task, **{**STANDARD_PRESETS[name], **kw})


# name -> (builder, description); every builder takes the task plus keyword options.
PRESETS: dict[str, tuple[Callable, str]] = {
    "paper": (paper_model, "disentangled 2-layer transformer of the paper, heads (1, 1) by default"),
    "paper-reduced": (lambda task, **kw: paper_model(task, reduced=True, **kw), "reduced model of the theorem"),
    "attn-only": (_standard_preset("attn-only"), "standard attention-only transformer"),
    "mlp": (_standard_preset("mlp"), "standard transformer with MLPs"),
    "layernorm": (_standard_preset("layernorm"), "standard transformer with MLPs and LayerNorm"),
    "rotary": (_standard_preset("rotary"), "attention-only transformer with rotary positions"),
}


def full_options(name: str, task: InContextTask, options: dict) -> dict:
    """Every option that determines preset ``name``'s model for ``task``, defaults filled in and
    checked (what a run's ``config.json`` stores, so that it rebuilds the same model whatever
    the defaults become). Paper presets keep their options as given."""
    if name not in PRESETS:
        raise ValueError(f"model: unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    if name not in STANDARD_PRESETS:
        return dict(options)
    unknown = set(options) - set(STANDARD_OPTIONS)
    if unknown:
        raise ValueError(f"model options: {sorted(unknown)} do not apply to {name}; expected some of {STANDARD_OPTIONS}")
    cfg = standard_config(task, **{**STANDARD_PRESETS[name], **options})
    return {"n_layers": cfg["n_layers"], "n_heads": cfg["n_heads"], "d_model": cfg["d_model"],
            "mlp": not cfg["attn_only"], "layernorm": cfg["normalization_type"] == "LN",
            "positional": cfg["positional_embedding_type"], "seed": cfg["seed"]}


def build_model(name: str, task: InContextTask, **kwargs):
    """Build the preset ``name`` for ``task``. ``kwargs`` go to the preset's builder."""
    if name not in PRESETS:
        raise ValueError(f"model: unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    model = PRESETS[name][0](task, **kwargs)
    check_model_matches_task(model, task)
    return model


def check_model_matches_task(model, task: InContextTask) -> None:
    """Refuse a model whose context length or vocabulary does not fit the task."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise TypeError(f"model: expected a TransformerLens model with a .cfg, got {type(model).__name__}")
    if cfg.n_ctx != task.seq_len:
        raise ValueError(f"model: n_ctx={cfg.n_ctx} does not match the task's seq_len={task.seq_len}")
    if cfg.d_vocab != task.vocab_size:
        raise ValueError(f"model: d_vocab={cfg.d_vocab} does not match the task's vocab_size={task.vocab_size}")
    d_out = getattr(cfg, "d_vocab_out", cfg.d_vocab)
    if d_out not in (-1, task.vocab_size):
        raise ValueError(f"model: d_vocab_out={d_out} does not match the task's vocab_size={task.vocab_size}")
