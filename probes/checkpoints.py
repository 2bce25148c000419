"""Probing saved checkpoints: one record series across training steps, from whatever saved them.

    monitor = probe_checkpoints(find_checkpoints("out/"), load_transformers, suite, tokens)
    monitor.rows; monitor.formation("induction", "repeat", 0.5)

``checkpoints`` is a list of ``(step, path)`` (or of paths whose names end in a step number);
``load(path)`` returns the model. :func:`load_transformers` loads a local Hugging Face model
directory (``config.json`` and safetensors weights, or a ``.bin`` that ``torch.load`` opens with
``weights_only=True``); nothing is ever downloaded, and a file that only full unpickling could
open is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probes.monitor import ProbeMonitor
from probes.suite import ProbeSuite

_STEP = re.compile(r"(?:^|[-_]|checkpoint|step|ckpt|iter|epoch)(\d+)$")  # not "gpt2"


def step_of(path: str | Path) -> int | None:
    """The training step a checkpoint's name ends in (``checkpoint-500``, ``step_1200``, ``ckpt3.pt``)."""
    m = _STEP.search(Path(path).name.split(".")[0])
    return int(m.group(1)) if m else None


def find_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints in ``directory``, by step: sub-directories or weight files
    (``.safetensors``, ``.bin``, ``.pt``) whose names end in a step number."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"path: {directory} is not a directory")
    found = []
    for p in directory.iterdir():
        step = step_of(p)
        if step is not None and (p.is_dir() or p.suffix in (".safetensors", ".bin", ".pt")):
            found.append((step, p))
    return sorted(found)


def is_transformers_dir(path: str | Path) -> bool:
    """A local Hugging Face model directory: a ``config.json`` that names a ``model_type``."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return "model_type" in json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def check_transformers_dir(path: str | Path) -> None:
    """Refuse, before anything loads, a model directory without weights or with weights only a
    full unpickling could open."""
    path = Path(path)
    if not is_transformers_dir(path):
        raise FileNotFoundError(f"path: {path} has no config.json naming a model_type (a Hugging Face model directory)")
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(path.glob("*.bin")) + sorted(path.glob("*.pt"))
    if not pickles:
        raise FileNotFoundError(f"path: {path} holds no weights (no *.safetensors, *.bin or *.pt)")
    for f in pickles:
        try:
            torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for what weights_only refuses
            raise ValueError(f"path: {f} is not a plain tensor file (torch.load(weights_only=True) refused it: "
                             f"{type(exc).__name__}); save it with safetensors") from exc


def load_transformers(path: str | Path) -> nn.Module:
    """A causal LM from a local Hugging Face directory, in eval mode; never touches the hub."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    check_transformers_dir(path)
    if any(path.glob("*.safetensors")):
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True)
    else:
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
        state: dict[str, torch.Tensor] = {}
        for f in sorted(path.glob("*.bin")) + sorted(path.glob("*.pt")):
            state.update(torch.load(f, map_location="cpu", weights_only=True))
        model.load_state_dict(state, strict=False)
    return model.eval()


def probe_checkpoints(
    checkpoints: Iterable[tuple[int, str | Path] | str | Path],
    load: Callable[[Any], nn.Module],
    suite: ProbeSuite,
    tokens: torch.Tensor,
    run_dir: str | Path | None = None,
    progress: bool | None = None,
    **context: Any,
) -> ProbeMonitor:
    """Run ``suite`` on each checkpoint's model (``load(path)``), in step order; the records, with
    their ``step``, in the returned monitor (and appended to ``run_dir/probes.jsonl`` when given)."""
    from tqdm.auto import tqdm

    items = []
    for c in checkpoints:
        step, path = c if isinstance(c, tuple) else (step_of(c), c)
        if step is None:
            raise ValueError(f"checkpoints: cannot tell the step of {path}; pass (step, path) pairs")
        items.append((int(step), path))
    if not items:
        raise ValueError("checkpoints: expected at least one checkpoint, got none")
    monitor = ProbeMonitor(suite, tokens, schedule=[s for s, _ in items], run_dir=run_dir, **context)
    for step, path in tqdm(sorted(items, key=lambda x: x[0]), desc="checkpoints", unit="ckpt",
                           disable=None if progress is None else not progress):
        monitor.probe(load(path), step)
    return monitor
