"""One adapter over TransformerLens versions: a config plus weights in ``HookedTransformer``
naming become a ``HookedTransformer`` (TransformerLens 3) or a ``TransformerBridge`` built by
``TransformerBridge.boot_native`` (TransformerLens 4, where ``HookedTransformer`` was removed).

Both compute the same function from the same weights; the bridge needs three corrections that
``boot_native`` does not make by itself: it always divides scores by ``sqrt(d_head)``, its rotary
embedding pairs adjacent dimensions, and its config defaults add LayerNorm.
"""

from __future__ import annotations

import warnings

import torch

from interp_causal.names import BACKENDS


_CLASSES: dict = {}


def lens_classes() -> dict[str, type | None]:
    """``{"hooked": HookedTransformer, "bridge": TransformerBridge}`` as this TransformerLens has
    them (None where it has not: 4 removed the first, before 3.x had no second), imported once,
    without 3.9's deprecation warning."""
    if not _CLASSES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                from transformer_lens import HookedTransformer
            except ImportError:
                HookedTransformer = None
            try:
                from transformer_lens.model_bridge import TransformerBridge
            except ImportError:
                TransformerBridge = None
        _CLASSES.update(hooked=HookedTransformer, bridge=TransformerBridge)
    return _CLASSES


def default_backend() -> str:
    """``hooked`` where TransformerLens still has ``HookedTransformer``, else ``bridge``."""
    return "hooked" if lens_classes()["hooked"] is not None else "bridge"


def instantiate(
    cfg: dict,
    weights: dict[str, torch.Tensor] | None = None,
    trainable: dict[str, torch.Tensor | None] | None = None,
    backend: str | None = None,
):
    """Build a TransformerLens model from ``HookedTransformerConfig`` keyword arguments.

    weights: ``HookedTransformer`` parameter names -> tensors to load (others keep their init).
    trainable: if given, exactly these parameters (``HookedTransformer`` names) learn; a tensor
    value is a 0/1 mask of the same shape that limits which entries learn.
    """
    backend = default_backend() if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    model = _hooked(cfg) if backend == "hooked" else _bridge(cfg)
    name_of = (lambda n: n) if backend == "hooked" else bridge_name  # noqa: E731
    layout = (lambda n, t: t) if backend == "hooked" else bridge_layout  # noqa: E731
    if weights:
        converted = {name_of(k): layout(k, v) for k, v in weights.items()}
        missing = set(converted) - set(model.state_dict())
        if missing:
            raise KeyError(f"weights: the {backend} model has no parameters {sorted(missing)}")
        model.load_state_dict(converted, strict=False)
    if trainable is not None:
        for p in model.parameters():
            p.requires_grad_(False)
        for name, mask in trainable.items():
            param = _parameter(model, name_of(name))
            param.requires_grad_(True)
            if mask is not None:
                _mask_gradient(param, layout(name, mask).to(param.dtype))
    model.eval()
    return model


def attribute(model: torch.nn.Module, name: str):
    """What a dotted name (``blocks.0.attn.W_Q``) reaches by attributes and indices: a parameter,
    or on the bridge a ``HookedTransformer``-named view. Raises ``AttributeError`` when nothing."""
    obj = model
    try:
        for part in name.split("."):
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    except (IndexError, TypeError) as exc:
        raise AttributeError(f"{type(model).__name__} has nothing at {name!r}") from exc
    return obj


def parameter(model: torch.nn.Module, name: str) -> torch.nn.Parameter | None:
    """A parameter by its state-dict name (the bridge's ``named_parameters`` use other names), or
    None when that name is a buffer or nothing."""
    try:
        obj = attribute(model, name)
    except AttributeError:
        return None
    return obj if isinstance(obj, torch.nn.Parameter) else None


def _parameter(model: torch.nn.Module, name: str) -> torch.nn.Parameter:
    param = parameter(model, name)
    if param is None:
        raise KeyError(f"trainable: {name!r} is not a parameter of {type(model).__name__}")
    return param


def _mask_gradient(param: torch.nn.Parameter, mask: torch.Tensor) -> None:
    """Let only the entries where ``mask`` is 1 learn, by zeroing the rest of the gradient."""
    param.register_hook(lambda grad: grad * mask)


def _hooked(cfg: dict):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as exc:
        raise ImportError(
            "backend: 'hooked' needs TransformerLens 3 (HookedTransformer was removed in 4); use backend='bridge'"
        ) from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return HookedTransformer(HookedTransformerConfig(**cfg))


BRIDGE_KEYS = (
    "n_layers", "d_model", "d_head", "n_heads", "n_ctx", "d_vocab", "d_vocab_out", "attn_only", "d_mlp",
    "act_fn", "normalization_type", "positional_embedding_type", "use_attn_scale", "seed", "rotary_dim",
)  # fmt: skip


def _bridge(cfg: dict):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.model_bridge.sources.native.model import NativeAttention

    kwargs = {k: cfg[k] for k in BRIDGE_KEYS if k in cfg}
    kwargs.setdefault("normalization_type", None)
    kwargs.setdefault("use_attn_scale", True)
    kwargs["device"] = "cpu"
    bridge = TransformerBridge.boot_native(TransformerBridgeConfig(**kwargs))
    if not cfg.get("use_attn_scale", True):
        # boot_native ignores use_attn_scale=False and always divides by sqrt(d_head)
        for module in bridge.original_model.modules():
            if isinstance(module, NativeAttention):
                module.scale = 1.0
    return bridge


_BRIDGE_SUFFIX = {
    "W_Q": "q.weight", "W_K": "k.weight", "W_V": "v.weight", "W_O": "o.weight",
    "b_Q": "q.bias", "b_K": "k.bias", "b_V": "v.bias", "b_O": "o.bias",
    "W_in": "in.weight", "b_in": "in.bias", "W_out": "out.weight", "b_out": "out.bias",
}  # fmt: skip
_BRIDGE_TOP = {"W_U": "unembed.weight", "b_U": "unembed.bias", "W_E": "embed.weight", "W_pos": "pos_embed.weight"}


def bridge_name(name: str) -> str:
    """The bridge's name for a ``HookedTransformer`` parameter name."""
    prefix, _, suffix = name.rpartition(".")
    if suffix in _BRIDGE_SUFFIX:
        return f"{prefix}.{_BRIDGE_SUFFIX[suffix]}"
    if suffix in _BRIDGE_TOP:
        return _BRIDGE_TOP[suffix]
    raise KeyError(f"weights: no bridge parameter for {name!r}")


def bridge_layout(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A ``HookedTransformer`` parameter's value in the bridge's ``nn.Linear`` layout."""
    suffix = name.rpartition(".")[2]
    if suffix in ("W_Q", "W_K", "W_V"):  # [head, d_model, d_head] -> [(head d_head), d_model]
        h, m, d = tensor.shape
        return tensor.permute(0, 2, 1).reshape(h * d, m)
    if suffix == "W_O":  # [head, d_head, d_model] -> [d_model, (head d_head)]
        h, d, m = tensor.shape
        return tensor.reshape(h * d, m).T
    if suffix in ("b_Q", "b_K", "b_V"):
        return tensor.reshape(-1)
    if suffix in ("W_in", "W_out", "W_U"):
        return tensor.T
    return tensor
