"""Any model in: the model a probe is given, turned into one whose sites can be found.

- A TransformerLens model (``HookedTransformer``, ``TransformerBridge``, any ``HookedRootModule``)
  or a plain ``nn.Module`` with a ``site_map``: used as it is.
- An nnsight wrapper (``nnsight.NNsight``, ``LanguageModel``): unwrapped to the module it wraps.
- A Hugging Face ``transformers`` causal LM (GPT-2, GPT-NeoX / Pythia, Llama and every other
  architecture TransformerLens's bridge adapts): wrapped in a ``TransformerBridge``, without any
  hub access. Hugging Face attention probabilities are no submodule's output, and building a
  bridge rewires the module it is given, so the bridge is built around a *twin*: a second
  instance of the model's class that shares every parameter and buffer tensor with it (nothing is
  copied; the twin sees each optimiser step) and runs eager attention, whatever implementation
  the model itself was loaded with. The user's model is never touched. The twin and its bridge
  are built once per model and rebuilt only when the model's tensors are replaced (``.to()``).

Nothing here imports transformers or nnsight unless such a model comes in.
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn

from probes.sites import SiteMap, is_hooked

_bridges: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()


def probe_model(model: object, site_map: SiteMap | None = None) -> nn.Module:
    """The module the probes run on for ``model`` (see the module docstring)."""
    model = unwrap_nnsight(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module (a TransformerLens, Hugging Face or plain PyTorch "
                        f"model, or an nnsight wrapper of one), got {type(model).__name__}")
    if site_map is None and not is_hooked(model) and is_transformers_model(model):
        return transformers_bridge(model)
    return model


def unwrap_nnsight(model: object) -> object:
    """The module an nnsight ``NNsight`` / ``LanguageModel`` wraps; anything else unchanged."""
    inner = getattr(type(model), "__module__", "").startswith("nnsight.") and model.__dict__.get("_module")
    return inner if isinstance(inner, nn.Module) else model


def is_transformers_model(model: nn.Module) -> bool:
    """A Hugging Face ``transformers`` model (its class lives in ``transformers`` and it has a config)."""
    return type(model).__module__.startswith("transformers.") and hasattr(getattr(model, "config", None), "model_type")


def transformers_bridge(model: nn.Module) -> nn.Module:
    """A ``TransformerBridge`` over a weight-sharing, eager-attention twin of ``model`` (cached)."""
    key = _tensor_key(model)
    cached = _bridges.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    bridge = _build_bridge(model)
    _bridges[model] = (key, bridge)
    return bridge


def _tensor_key(model: nn.Module) -> tuple:
    """What the twin shares: the storage of every parameter and buffer."""
    return tuple((t.data_ptr(), t.dtype, t.device, tuple(t.shape)) for t in (*model.parameters(), *model.buffers()))


def _build_bridge(model: nn.Module) -> nn.Module:
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    architecture = type(model).__name__
    twin = eager_twin(model)
    try:
        bridge = build_bridge_from_module(twin, architecture, hf_config=twin.config)
    except Exception as exc:  # the factory raises several types for an architecture it has no adapter for
        raise ValueError(f"model: TransformerLens cannot bridge a {architecture} ({type(exc).__name__}: {exc}); "
                         f"wrap it yourself and pass the bridge, or pass site_map=... for its submodules") from exc
    return bridge.eval()


def eager_twin(model: nn.Module) -> nn.Module:
    """A second instance of ``model``'s class sharing all its tensors, with eager attention, in eval mode.

    Built on the meta device (no memory, no initialisation), then given the model's own parameter
    and buffer tensors (``load_state_dict(assign=True)`` for the state dict, by reference for the
    non-persistent buffers such as rotary frequencies). Its parameters do not require gradients:
    the probes' own leaves do.
    """
    config = copy.deepcopy(model.config)
    config._attn_implementation = "eager"
    with torch.device("meta"):
        twin = type(model)(config)
    twin.load_state_dict(model.state_dict(), assign=True, strict=True)
    for name, buffer in model.named_buffers():
        owner, _, leaf = name.rpartition(".")
        module = twin.get_submodule(owner) if owner else twin
        module._buffers[leaf] = buffer
    left = [n for n, t in (*twin.named_parameters(), *twin.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"model: could not share {left[:5]} of {type(model).__name__} with its probing twin")
    twin.requires_grad_(False)
    return twin.eval()
