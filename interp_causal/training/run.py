"""A training run as a directory: ``config.json``, ``metrics.jsonl``, ``checkpoint.pt``, ``summary.json``."""

from __future__ import annotations

from pathlib import Path

import torch

from interp_causal.tasks import InContextTask
from interp_causal.training.checkpoint import load_checkpoint, write_json
from interp_causal.training.recipes import Recipe
from interp_causal.training.trainer import CHECKPOINT, Callback, Trainer

CONFIG = "config.json"
SUMMARY = "summary.json"


def make_config(task: InContextTask, model: str, recipe: Recipe, seed: int, model_options: dict | None = None) -> dict:
    """Everything needed to rebuild a run: the task, the model preset and its options, the recipe, the seed."""
    options = dict(model_options or {})
    if model.startswith("paper"):
        options.setdefault("init", recipe.init)
    options.setdefault("seed", seed)
    return {"task": task.to_dict(), "model": {"preset": model, "options": options}, "recipe": recipe.to_dict(), "seed": seed}


def build_from_config(config: dict):
    """``(task, model, recipe)`` described by a run's config."""
    from interp_causal.models import build_model

    task = InContextTask.from_dict(config["task"])
    options = dict(config["model"].get("options", {}))
    if "heads" in options:
        options["heads"] = tuple(options["heads"])
    model = build_model(config["model"]["preset"], task, **options)
    return task, model, Recipe(**config["recipe"])


def start_run(config: dict, run_dir: str | Path, callbacks: list[Callback] = (), progress: bool | None = None) -> Trainer:
    """A fresh trainer for ``config`` writing into ``run_dir`` (refuses a directory that already holds a run)."""
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).exists():
        raise FileExistsError(f"out: {run_dir} already holds a run; pass resume to continue it or choose another directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob("*.jsonl"):
        stale.unlink()
    task, model, recipe = build_from_config(config)
    write_json(run_dir / CONFIG, config)
    return Trainer(model, task, recipe, run_dir, config["seed"], callbacks, config, progress)


def resume_run(
    run_dir: str | Path, steps: int | None = None, callbacks: list[Callback] = (), progress: bool | None = None
) -> Trainer:
    """The trainer of the run in ``run_dir`` at its last checkpoint; ``steps`` raises the total."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"out: {run_dir} holds no run to resume (no {CONFIG})")
    state = load_checkpoint(run_dir / CHECKPOINT)
    config = state["config"]
    if steps is not None and steps < state["step"]:
        raise ValueError(f"steps: the run in {run_dir} has already done {state['step']} steps; --steps must be at least that")
    if steps is not None and steps != config["recipe"]["steps"]:
        config = {**config, "recipe": {**config["recipe"], "steps": int(steps)}}
        write_json(run_dir / CONFIG, config)
    task, model, recipe = build_from_config(config)
    trainer = Trainer(model, task, recipe, run_dir, config["seed"], callbacks, config, progress)
    trainer.resume(state)
    return trainer


def load_run(run_dir: str | Path):
    """``(task, model, config, checkpoint)`` of a saved run, the model at its last checkpoint."""
    state = load_checkpoint(Path(run_dir) / CHECKPOINT)
    task, model, _ = build_from_config(state["config"])
    model.load_state_dict(state["model"])
    model.eval()
    return task, model, state["config"], state


def summarize(trainer: Trainer) -> dict:
    """Final numbers of a run, written to ``summary.json``."""
    last = trainer.history[-1]
    bayes = last["bayes_loss"]
    summary = {
        "steps": trainer.step,
        "seconds": round(trainer.elapsed, 2),
        "final_test_loss": last["test_loss"],
        "bayes_loss": bayes,
        "gap": last["test_loss"] - bayes,
        "gap_pct": 100.0 * (last["test_loss"] - bayes) / bayes,
        "baselines": trainer.reference_losses,
        "threads": torch.get_num_threads(),
    }
    if trainer.run_dir is not None:
        write_json(trainer.run_dir / SUMMARY, summary)
    return summary
