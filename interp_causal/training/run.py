"""Where a run starts: ``train_run`` trains a config into a run directory, or resumes one.

    config = make_config(task, "paper", get_recipe("fast"), seed=0)
    summary = train_run(config, "runs/example", callbacks=default_callback)   # interp_causal.probing

``train``, ``demo`` and every experiment go through :func:`train_run`; its files are those of
:class:`~interp_causal.training.run_dir.RunDir`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from interp_causal.names import FORWARDS
from interp_causal.tasks import InContextTask
from interp_causal.training.interventions import Interventions
from interp_causal.training.recipes import Recipe
from interp_causal.training.run_dir import RunDir
from interp_causal.training.trainer import Callback, Trainer, check_forward

Callbacks = Sequence[Callback] | Callable[[Trainer], Sequence[Callback] | Callback]


def make_config(task: InContextTask, model: str, recipe: Recipe, seed: int, model_options: dict | None = None,
                forward: str = "auto", interventions: Interventions | dict | None = None, guard: bool = True) -> dict:
    """Everything needed to rebuild a run: the task, the model preset and its options, the recipe,
    the seed, the training forward (one of ``names.FORWARDS``) and the interventions (ablated and
    clamped heads, frozen parameters; see :mod:`~interp_causal.training.interventions`) and, when
    off, the divergence guard (:meth:`Trainer._guard_check`)."""
    options = dict(model_options or {})
    if model.startswith("paper"):
        options.setdefault("init", recipe.init)
    options.setdefault("seed", seed)
    from interp_causal.models import full_options

    options = full_options(model, task, options)  # every default filled in: the run rebuilds exactly
    config = {"task": task.to_dict(), "model": {"preset": model, "options": options}, "recipe": recipe.to_dict(),
              "seed": seed, "forward": check_forward(forward)}
    if not isinstance(interventions, Interventions):
        interventions = Interventions.from_dict(interventions)
    if interventions:
        config["interventions"] = interventions.to_dict()
    if not guard:
        config["guard"] = False
    return config


def build_from_config(config: dict):
    """``(task, model, recipe)`` described by a run's config."""
    from interp_causal.models import build_model

    task = InContextTask.from_dict(config["task"])
    options = dict(config["model"].get("options", {}))
    if "heads" in options:
        options["heads"] = tuple(options["heads"])
    model = build_model(config["model"]["preset"], task, **options)
    return task, model, Recipe(**config["recipe"])


def _trainer(config: dict, run: RunDir, progress: bool | None, built: tuple | None = None) -> Trainer:
    task, model, recipe = build_from_config(config) if built is None else built
    return Trainer(model, task, recipe, run.path, config["seed"], (), config, progress,
                   forward=config.get("forward", FORWARDS[0]),  # runs from before "forward" existed: auto
                   interventions=config.get("interventions"), guard=config.get("guard", True))


def start_run(config: dict, run_dir: str | Path, progress: bool | None = None) -> Trainer:
    """A fresh trainer for ``config`` writing into ``run_dir`` (refuses a directory that already
    holds a run). The model and the interventions are checked before anything is written."""
    run = RunDir(run_dir)
    built = build_from_config(config)
    task, model, _ = built
    Interventions.from_dict(config.get("interventions")).check(model, task, config.get("forward", FORWARDS[0]))
    run.start(config)
    return _trainer(config, run, progress, built)


def resume_run(run_dir: str | Path, steps: int | None = None, progress: bool | None = None,
               lr: float | None = None) -> Trainer:
    """The trainer of the run in ``run_dir`` at its last checkpoint; ``steps`` raises the total,
    ``lr`` replaces the learning rate from here on (e.g. after the guard stopped a diverging run)."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise FileNotFoundError(f"out: {run.path} holds no run to resume (no {RunDir.config})")
    state = run.load_checkpoint()
    config = state["config"]
    if steps is not None and steps < state["step"]:
        raise ValueError(f"steps: the run in {run.path} has already done {state['step']} steps; --steps must be at least that")
    changes = {k: v for k, v in (("steps", steps), ("lr", lr)) if v is not None and v != config["recipe"][k]}
    if changes:
        config = {**config, "recipe": Recipe(**config["recipe"]).with_overrides(**changes).to_dict()}
        run.write_config(config)
    trainer = _trainer(config, run, progress)
    trainer.resume(state)
    return trainer


def train_run(config: dict | None, out: str | Path, resume: bool = False, steps: int | None = None,
              callbacks: Callbacks = (), progress: bool | None = None, lr: float | None = None) -> dict:
    """Train ``config`` into ``out`` (or, with ``resume``, continue ``out`` up to ``steps``) and
    return its ``summary.json``. ``callbacks``: callbacks, or a function of the trainer that makes
    them (``interp_causal.probing.default_callback`` probes the run)."""
    trainer = resume_run(out, steps=steps, progress=progress, lr=lr) if resume else start_run(config, out, progress=progress)
    attach_callbacks(trainer, callbacks)
    trainer.fit()
    return trainer.run.read_summary()


def attach_callbacks(trainer: Trainer, callbacks: Callbacks) -> None:
    """Add ``callbacks`` (callbacks, or a function of the trainer that makes them) to ``trainer``."""
    made = callbacks(trainer) if callable(callbacks) else callbacks
    trainer.callbacks += [made] if not isinstance(made, Sequence) else list(made)


def load_run(run_dir: str | Path):
    """``(task, model, config, checkpoint)`` of a saved run, the model at its last checkpoint, with
    the run's ablated and clamped heads attached as it was trained (``model`` is what to call)."""
    state = RunDir(run_dir).load_checkpoint()
    task, model, _ = build_from_config(state["config"])
    model.load_state_dict(state["model"])
    model.eval()
    attached = Interventions.from_dict(state["config"].get("interventions")).attach(model, task)
    return task, model if attached is None else attached.model, state["config"], state
