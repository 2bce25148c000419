"""Sites: canonical hook names, found on whatever model is given, and hooks attached to them.

Probes speak TransformerLens 3 hook names (the *canonical* site names): ``hook_embed``,
``hook_pos_embed``, ``blocks.{l}.hook_resid_pre`` / ``hook_resid_post`` ``[batch, pos, d_model]``,
``blocks.{l}.attn.hook_attn_scores`` / ``hook_pattern`` ``[batch, head, q, k]``,
``blocks.{l}.attn.hook_q`` / ``hook_k`` / ``hook_v`` / ``hook_z`` ``[batch, pos, head, d_head]``.
This module maps them onto

- any model with a ``hook_dict`` and a ``hooks()`` context manager: a TransformerLens
  ``HookedTransformer``, any ``HookedRootModule`` (after ``setup()``), and a ``TransformerBridge``
  (TransformerLens 3.9 and 4.x), whose ``hook_dict`` holds both its own canonical names
  (``blocks.0.hook_out``) and the TransformerLens 3 aliases (``blocks.0.hook_resid_post``). When a
  bridge lacks the alias, its canonical spelling is tried;
- a plain ``nn.Module`` through a ``site_map`` ``{site: submodule or dotted submodule name}``;
  a forward hook on that submodule reads (and may replace) its output, which must be the
  activation tensor in the canonical layout. A ``site_map`` also overrides names on hooked models.

Nothing here imports TransformerLens: models are recognised by what they offer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator, Union

import torch
from torch import nn

SiteMap = Mapping[str, Union[nn.Module, str]]
Edit = Callable[[torch.Tensor], torch.Tensor]

# TransformerBridge's own names for TransformerLens 3 names, tried when a bridge offers no alias.
_BRIDGE_SPELLINGS: list[tuple[str, str]] = [
    (r"blocks\.(\d+)\.hook_resid_pre", "blocks.{0}.hook_in"),
    (r"blocks\.(\d+)\.hook_resid_post", "blocks.{0}.hook_out"),
    (r"blocks\.(\d+)\.hook_attn_out", "blocks.{0}.attn.hook_out"),
    (r"blocks\.(\d+)\.attn\.hook_([qkv])", "blocks.{0}.attn.{1}.hook_out"),
    (r"blocks\.(\d+)\.attn\.hook_z", "blocks.{0}.attn.o.hook_in"),
    (r"hook_embed", "embed.hook_out"),
    (r"hook_pos_embed", "pos_embed.hook_out"),
]


class MissingSiteError(LookupError):
    """A probe needs a site the model does not offer; the message lists what it does offer."""


@dataclass(frozen=True)
class Site:
    """A canonical site found on a model: either a hook name (hooked models) or a submodule."""

    site: str
    hook_name: str | None = None
    module: nn.Module | None = None


@dataclass(frozen=True)
class ModelDims:
    """Layers (and heads, vocabulary, context length and width, when the model says) of a model:
    for probes that declare per-layer sites, and to check tokens before any forward pass."""

    n_layers: int
    n_heads: int | None = None
    d_vocab: int | None = None
    n_ctx: int | None = None
    d_model: int | None = None


def is_hooked(model: object) -> bool:
    """True for TransformerLens-style models: a ``hook_dict`` mapping and a ``hooks()`` context manager."""
    return callable(getattr(model, "hooks", None)) and isinstance(getattr(model, "hook_dict", None), Mapping)


def offered_sites(model: nn.Module, site_map: SiteMap | None = None) -> list[str]:
    """Every site name the model can be probed at (hook names plus ``site_map`` keys), sorted."""
    names = set(site_map or {})
    if is_hooked(model):
        names.update(model.hook_dict)
    return sorted(names)


def find_site(model: nn.Module, site: str, site_map: SiteMap | None = None) -> Site:
    """Resolve one canonical ``site`` on ``model``; raise :class:`MissingSiteError` listing the offer."""
    if not isinstance(site, str):
        raise TypeError(f"site: expected a hook name string, got {type(site).__name__}")
    if site_map and site in site_map:
        return _from_site_map(model, site, site_map[site])
    if is_hooked(model):
        hook_dict = model.hook_dict  # a bridge rebuilds this dict on every access
        for name in [site, *_bridge_spellings(site)]:
            if name in hook_dict:
                # The hook point's own (canonical) name: a bridge in compatibility mode calls a hook
                # once per alias it was added under, which would apply an edit twice.
                return Site(site, hook_name=getattr(hook_dict[name], "name", None) or name)
    raise MissingSiteError(_missing_message(model, site, site_map))


def find_sites(model: nn.Module, sites: Iterable[str], site_map: SiteMap | None = None) -> dict[str, Site]:
    """Resolve several sites at once (see :func:`find_site`)."""
    return {s: find_site(model, s, site_map) for s in sites}


def model_dims(model: nn.Module, site_map: SiteMap | None = None) -> ModelDims:
    """``n_layers`` / ``n_heads`` from ``model.cfg`` when present, else from the ``site_map`` keys."""
    cfg = getattr(model, "cfg", None)
    n_layers = getattr(cfg, "n_layers", None)
    if isinstance(n_layers, int):
        known = {k: getattr(cfg, k, None) for k in ("n_heads", "d_vocab", "n_ctx", "d_model")}
        return ModelDims(n_layers, **{k: v if isinstance(v, int) and v > 0 else None for k, v in known.items()})
    layers = [int(m.group(1)) for key in (site_map or {}) if (m := re.match(r"blocks\.(\d+)\.", key))]
    if not layers:
        raise ValueError(
            f"model: cannot tell how many layers {type(model).__name__} has; it has no cfg.n_layers "
            "and site_map names no 'blocks.{l}.' site. Pass site_map={'blocks.0.attn.hook_pattern': ...}"
        )
    return ModelDims(max(layers) + 1)


class StopForward(Exception):
    """Raised inside a hook to end a forward pass once every site it needed has fired."""


@contextmanager
def hooks_at(
    model: nn.Module,
    sites: Iterable[str],
    site_map: SiteMap | None = None,
    edits: Mapping[str, Edit] | None = None,
    on_activation: Callable[[str, torch.Tensor], None] | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Attach hooks at ``sites`` for the duration; yield the dict they fill ``{site: activation}``.

    edits: ``{site: fn}``; ``fn(activation)`` returns the replacement, which is what is stored and
    what the rest of the forward pass uses (on a bridge, after the hook point converts it back
    to its own layout), unless the model ignores edits at that site (see probes.gradient).
    on_activation: ``fn(site, activation)`` called as each activation is produced; the dict then
    records only that the site fired (``{site: None}``), so no activation outlives its layer.
    Only these sites are hooked: no cache of the whole model is built.
    """
    sites = list(dict.fromkeys(sites))
    edits = dict(edits or {})
    unknown = set(edits) - set(sites)
    if unknown:
        raise ValueError(f"edits: sites {sorted(unknown)} are not among the hooked sites {sites}")
    resolved = find_sites(model, sites, site_map)
    acts: dict[str, torch.Tensor] = {}

    def make_fn(site: str) -> Callable[[torch.Tensor], torch.Tensor | None]:
        edit = edits.get(site)

        def fn(t: torch.Tensor) -> torch.Tensor | None:
            if not isinstance(t, torch.Tensor):
                raise TypeError(
                    f"site {site!r}: expected the hooked module to output a tensor, got {type(t).__name__}; "
                    "map the site to a submodule whose output is the activation"
                )
            if edit is not None:
                t = edit(t)
            if on_activation is None:
                acts[site] = t
            else:
                acts[site] = None
                on_activation(site, t)
            return t if edit is not None else None

        return fn

    fwd_hooks = []
    with ExitStack() as stack:
        for site, where in resolved.items():
            fn = make_fn(site)
            if where.hook_name is not None:
                fwd_hooks.append((where.hook_name, lambda t, hook, fn=fn: fn(t)))
            else:
                handle = where.module.register_forward_hook(lambda mod, inp, out, fn=fn: fn(out))
                stack.callback(handle.remove)
        if fwd_hooks:
            stack.enter_context(model.hooks(fwd_hooks=fwd_hooks))
        yield acts


def run_with_sites(
    model: nn.Module,
    tokens: torch.Tensor,
    sites: Iterable[str],
    site_map: SiteMap | None = None,
    edits: Mapping[str, Edit] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass of ``model(tokens)`` capturing ``sites``: ``(logits [batch, pos, vocab], acts)``.

    Grad mode is the caller's. Raises :class:`MissingSiteError` before running if a site is missing,
    and ``RuntimeError`` if a hooked site never fired.
    """
    sites = list(dict.fromkeys(sites))
    with hooks_at(model, sites, site_map, edits) as acts:
        logits = as_logits(model(tokens))
    check_fired(model, sites, acts)
    return logits, acts


def stream_sites(
    model: nn.Module,
    tokens: torch.Tensor,
    sites: Iterable[str],
    on_activation: Callable[[str, torch.Tensor], None],
    site_map: SiteMap | None = None,
    need_logits: bool = True,
) -> torch.Tensor | None:
    """One forward pass that hands each site's activation to ``on_activation(site, activation)`` as
    it is produced and keeps none of them; returns the logits, or, with ``need_logits=False``, stops
    the pass as soon as every site has fired (the layers after them and the unembedding never run)
    and returns None. Grad mode is the caller's."""
    sites = list(dict.fromkeys(sites))
    remaining = set(sites)

    def deliver(site: str, t: torch.Tensor) -> None:
        on_activation(site, t)
        remaining.discard(site)
        if not remaining and not need_logits:
            raise StopForward

    logits = None
    with hooks_at(model, sites, site_map, on_activation=deliver) as fired:
        try:
            logits = as_logits(model(tokens))
        except StopForward:
            pass
    check_fired(model, sites, fired)
    return logits


def check_fired(model: nn.Module, sites: list[str], fired: Mapping[str, object]) -> None:
    silent = [s for s in sites if s not in fired]
    if silent:
        raise RuntimeError(f"sites {silent} were hooked on {type(model).__name__} but never fired in its forward pass")


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter (None for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return None


def as_logits(output: object) -> torch.Tensor:
    """The logits tensor from a model's output: the tensor itself, or its ``.logits``."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(f"model output: expected a logits tensor or an object with .logits, got {type(output).__name__}")


def _from_site_map(model: nn.Module, site: str, target: nn.Module | str) -> Site:
    if isinstance(target, str):
        if is_hooked(model) and target in model.hook_dict:
            return Site(site, hook_name=getattr(model.hook_dict[target], "name", None) or target)
        try:
            return Site(site, module=model.get_submodule(target))
        except AttributeError:
            raise MissingSiteError(
                f"site_map[{site!r}]: {type(model).__name__} has no submodule {target!r}; "
                f"its submodules are: {_compress(n for n, _ in model.named_modules() if n)}"
            ) from None
    if isinstance(target, nn.Module):
        if not any(m is target for m in model.modules()):
            raise ValueError(f"site_map[{site!r}]: the module given is not a submodule of the model")
        return Site(site, module=target)
    raise TypeError(f"site_map[{site!r}]: expected an nn.Module or a dotted submodule name, got {type(target).__name__}")


def _bridge_spellings(site: str) -> list[str]:
    out = []
    for pattern, spelling in _BRIDGE_SPELLINGS:
        m = re.fullmatch(pattern, site)
        if m:
            out.append(spelling.format(*m.groups()))
    return out


def _missing_message(model: nn.Module, site: str, site_map: SiteMap | None) -> str:
    offered = offered_sites(model, site_map)
    kind = "hook points and site_map" if is_hooked(model) else "site_map"
    msg = f"{type(model).__name__} offers no site {site!r}. Its {kind} offer: {_compress(offered) or 'nothing'}."
    if not is_hooked(model):
        msg += (
            f" For a plain module, map the site to a submodule whose output is that activation, "
            f"e.g. site_map={{{site!r}: 'dotted.submodule.name'}}."
        )
    return msg


def _compress(names: Iterable[str]) -> str:
    """``blocks.0.x, blocks.1.x`` -> ``blocks.{0,1}.x``: keeps error messages readable."""
    groups: dict[str, list[str]] = {}
    for n in names:
        m = re.match(r"(\w+)\.(\d+)\.(.*)", n)
        key, idx = (f"{m.group(1)}.{{}}.{m.group(3)}", m.group(2)) if m else (n, None)
        groups.setdefault(key, [])
        if idx is not None:
            groups[key].append(idx)
    parts = [key.format("{" + ",".join(idx) + "}") if idx else key for key, idx in groups.items()]
    return ", ".join(parts)
