"""Training: recipes, the trainer with callbacks, run directories, and ``train_run``, where a run starts."""

from interp_causal.training.checkpoint import CheckpointError, load_checkpoint
from interp_causal.training.interventions import Interventions
from interp_causal.training.recipes import RECIPES, Recipe, get_recipe
from interp_causal.training.run import attach_callbacks, build_from_config, load_run, make_config, resume_run, start_run, train_run
from interp_causal.training.run_dir import RunDir
from interp_causal.training.stacked import fit_stacked
from interp_causal.training.trainer import Callback, Trainer, TrainingDiverged, last_position_logits, last_position_loss

__all__ = [
    "RECIPES",
    "Callback",
    "CheckpointError",
    "Interventions",
    "Recipe",
    "RunDir",
    "Trainer",
    "TrainingDiverged",
    "attach_callbacks",
    "build_from_config",
    "fit_stacked",
    "get_recipe",
    "last_position_logits",
    "last_position_loss",
    "load_checkpoint",
    "load_run",
    "make_config",
    "resume_run",
    "start_run",
    "train_run",
]
