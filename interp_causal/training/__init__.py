"""Training: recipes, the trainer with callbacks, checkpoints and run directories."""

from interp_causal.training.checkpoint import CheckpointError, load_checkpoint
from interp_causal.training.recipes import RECIPES, Recipe, get_recipe
from interp_causal.training.run import build_from_config, load_run, make_config, resume_run, start_run, summarize
from interp_causal.training.trainer import Callback, Trainer, last_position_loss, read_jsonl

__all__ = [
    "RECIPES",
    "Callback",
    "CheckpointError",
    "Recipe",
    "Trainer",
    "build_from_config",
    "get_recipe",
    "last_position_loss",
    "load_checkpoint",
    "load_run",
    "make_config",
    "read_jsonl",
    "resume_run",
    "start_run",
    "summarize",
]
