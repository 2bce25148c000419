"""Models for the in-context causal tasks, as TransformerLens models (docs/science.md §2)."""

from interp_causal.models.paper import (
    PaperLayout,
    attention_matrices,
    is_paper_model,
    paper_config,
    paper_layout,
    paper_model,
    paper_weights_of,
    readout,
)
from interp_causal.models.presets import (
    PRESETS,
    STANDARD_PRESETS,
    build_model,
    check_model_matches_task,
    full_options,
    standard_config,
    standard_model,
)

__all__ = [
    "PRESETS",
    "PaperLayout",
    "STANDARD_PRESETS",
    "attention_matrices",
    "build_model",
    "check_model_matches_task",
    "full_options",
    "is_paper_model",
    "paper_config",
    "paper_layout",
    "paper_model",
    "paper_weights_of",
    "readout",
    "standard_config",
    "standard_model",
]
