"""Checkpoints: written atomically, loaded with ``weights_only=True``, refused when damaged."""

from __future__ import annotations

from pathlib import Path

import torch
from probes.files import atomic_write


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated or not ours."""


CHECKPOINT_KEYS = ("format", "step", "model", "optimizer")


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict:
    """Load with ``weights_only=True``; a truncated or foreign file raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint: no file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise CheckpointError(
            f"checkpoint: {path} could not be read ({type(exc).__name__}: {exc}); it is truncated or damaged"
        ) from exc
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        raise CheckpointError(f"checkpoint: {path} is not an interp-causal checkpoint (expected keys {CHECKPOINT_KEYS})")
    return state
