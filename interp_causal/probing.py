"""The glue between runs and ``probes`` (which knows nothing of tasks): which suite, on which batch.

``default_callback(trainer)`` probes a run while it trains (pass it to ``train_run(...,
callbacks=default_callback)``; it writes ``probes.jsonl`` and adds ``mechanisms`` to the summary);
``probe_run`` probes a saved checkpoint with the full suite, scikit-learn's linear copying probe
included; ``probe_path`` is ``interp-causal probe PATH``: a run, a Hugging Face model directory or
a directory of checkpoints; ``mechanism_lines`` prints what the summary found.
"""

from __future__ import annotations

from pathlib import Path

import torch

from interp_causal.tasks import InContextTask, TaskBatch, bayes
from interp_causal.training import RunDir

PROBE_SEED_OFFSET = 2_000_003  # the probe batch never shares a stream with training or test data
PROBE_EVERY = 50
# a long run probes about this many times (every steps / PROBES_PER_RUN steps, never more often
# than every PROBE_EVERY): the paper's 2^17-step chain every 128 steps, not 2621 times
PROBES_PER_RUN = 1024
# 128 sequences: enough for every default metric (the linear probe fits on ~1700 rows) and cheap
# enough (~20 ms) that probing every 50 steps costs the paper model's training under 5%
PROBE_BATCH = 128
# the summary's mechanisms, in the order a reader meets them, and their names in lines and figures
MECHANISM_LABELS = {"parent_attention": "parent attention", "copying": "parent copying", "induction": "induction head"}


def probe_batch(task: InContextTask, n: int, seed: int) -> TaskBatch:
    """A fixed batch for probing, seeded apart from the training and test streams."""
    return task.sample(n, torch.Generator().manual_seed(seed + PROBE_SEED_OFFSET))


def default_schedule(every: int = PROBE_EVERY):
    """Every ``every`` steps, and log-spaced below that (1, 2, 3, 4, 5, 6, 8, 10, 13, ...): the
    mechanisms of the fast recipes form within the first few dozen steps, so their formation
    steps need probes there. The early probes are a fixed cost of a dozen probe passes."""
    from probes import at, log_spaced
    from probes import every as every_n

    return every_n(every) | at(log_spaced(10).steps(every))


def default_callback(trainer, every: int | None = None, batch_size: int = PROBE_BATCH, schedule=None):
    """The default suite (parent attention, graph-aware induction, ridge copying probe) on a fixed
    batch, written to the run's ``probes.jsonl``; ``schedule`` (any ``probes`` schedule) defaults to
    :func:`default_schedule` of ``every``, which defaults to :func:`probe_interval` of the recipe.

    Probes run at the process's own thread count (``torch.get_num_threads()``, which sweeps set per
    trial), not the ``probes`` default of 1 meant for a user's loop on busy cores: a paper model's
    probe of the two-parent task takes 63 ms at 2 threads against 113 at 1."""
    from probes import ProbeCallback, default_suite

    task = trainer.task
    batch = probe_batch(task, batch_size, trainer.seed)
    suite = default_suite(task.graph.parent_lists(), list(task.graph.target_parents))
    if schedule is None:
        schedule = default_schedule(probe_interval(trainer.recipe.steps) if every is None else every)
    return ProbeCallback(suite, batch.tokens, schedule=schedule, filename=RunDir.probes, threads=None)


def probe_interval(steps: int) -> int:
    """Steps between the default probes of a ``steps``-step run: :data:`PROBE_EVERY`, or for a long
    run ``steps / PROBES_PER_RUN`` (rounded up), so that probing stays a small share of training
    and a formation step is still read to 0.1% of the run."""
    return max(PROBE_EVERY, -(-steps // PROBES_PER_RUN))


def mechanism_lines(summary: dict | None) -> list[str]:
    """Human lines naming the parent-attention head, the copying layer and the induction head."""
    if not summary:
        return []
    lines = []
    for key, label in MECHANISM_LABELS.items():
        for name, m in sorted(summary.items()):
            if not (name == key or name.startswith(key + "_parent")) or not m:
                continue
            where = f"layer {m['layer']}" + (f" head {m['head']}" if m.get("head") is not None else "")
            slot = name[len(key) :].replace("_", " ").strip()
            formed = m.get("threshold_step")
            lines.append(
                f"{label + (' ' + slot if slot else '') + ' ':<17}{where}: {m['metric']} {m['value']:.3f}; "
                f"formed at step {formed if formed is not None else 'never'} "
                f"(threshold {m['threshold']}), steepest rise at step {m['steepest_step']}"
                + (f"; imposed ({m['imposed']}), not learned" if m.get("imposed") else "")
            )
            others = [h for h in m.get("heads", []) if (h["layer"], h["head"]) != (m["layer"], m["head"])]
            if others:
                lines.append(" " * 17 + "also above threshold: " + ", ".join(
                    f"layer {h['layer']} head {h['head']} {h['value']:.3f} (formed at step {h['threshold_step']})"
                    for h in others))
    return lines


def probe_run(run_dir: str | Path, batch_size: int = 512, seed: int = 0) -> dict:
    """Probe a saved run's checkpoint: attention, induction, logistic and ridge copying probes,
    KL to the Bayes estimator, and the head map (``figures/heads.png``: the token-pattern scores on
    repeated random tokens beside the graph's parent attention and graph-aware induction). Writes
    ``probe_summary.json`` beside the checkpoint."""
    from probes import BehaviourProbe, LinearCopyingProbe, ProbeSuite, default_suite, summarize
    from probes.heads import grids, head_scores

    from interp_causal.report import figures
    from interp_causal.training import load_run

    task, model, _, state = load_run(run_dir)
    batch = probe_batch(task, batch_size, seed)
    parents = task.graph.parent_lists()
    suite = ProbeSuite(
        default_suite(parents, list(task.graph.target_parents)).probes
        + [LinearCopyingProbe(parents, solver="logistic"), BehaviourProbe(alpha=task.alpha)]
    )
    result = suite.run(model, batch.tokens, reference=bayes(batch.tokens, task))
    summary = summarize(result)
    run = RunDir(run_dir)
    heads = {**head_scores(model), **grids(result)}  # token-pattern scores, then the graph's own
    figure = figures.head_map(heads, run.figure("heads.png"), f"{run.path.name}, step {int(state['step'])}")
    out = {"step": int(state["step"]), "mechanisms": summary, "records": [r for r in result.to_dicts()],
           "heads": {name: grid.tolist() for name, grid in heads.items()}, "figures": [figure.name]}
    run.write_probe_summary(out)
    return out


def probe_path(path: str | Path, out: str | Path | None = None, batch_size: int | None = None, seed: int = 0,
               seq_len: int | None = None, threshold: float = 0.5, progress: bool | None = None) -> dict:
    """``interp-causal probe PATH``. A run directory: :func:`probe_run`. A local Hugging Face model
    directory, or a directory of them (``checkpoint-*/``, ``step*/``, any name ending in a step):
    the head map's scores (previous-token, duplicate-token, induction) on repeated random tokens
    from the model's vocabulary, one ``probes.jsonl`` across steps, when each score formed, and
    the figures, in ``out`` (default ``path``). Every checkpoint is checked before anything is
    probed or written, so a bad one leaves nothing behind."""
    from probes import ProbeSuite, track
    from probes.checkpoints import (
        check_transformers_dir,
        find_checkpoints,
        is_transformers_dir,
        load_transformers,
        probe_checkpoints,
        step_of,
    )
    from probes.heads import HEAD_METRICS, default_tokens, grids, head_probes

    from interp_causal.report import figures

    path = Path(path)
    if RunDir(path).holds_run():
        return probe_run(path, batch_size=batch_size or 512, seed=seed)
    if not path.is_dir():
        raise FileNotFoundError(f"path: {path} is not a directory")
    checkpoints = [(step_of(path) or 0, path)] if is_transformers_dir(path) else find_checkpoints(path)
    if not checkpoints:
        raise FileNotFoundError(f"path: {path} is neither a run directory, nor a Hugging Face model directory "
                                f"(config.json and weights), nor a directory of checkpoints (checkpoint-*/, step*/)")
    for _, checkpoint in checkpoints:
        check_transformers_dir(checkpoint)
    tokens = default_tokens(load_transformers(checkpoints[0][1]), batch_size or 64, seq_len, seed)
    monitor = probe_checkpoints(checkpoints, load_transformers, ProbeSuite(head_probes(tokens.shape[1] // 2)), tokens,
                                progress=progress)
    run = RunDir(out if out is not None else path)
    run.write_probes(monitor.rows)
    last = max(s for s, _ in checkpoints)
    final = grids(r for r in monitor.rows if r["step"] == last)
    title = f"{path.name}: {len(checkpoints)} checkpoint(s), step {last}"
    names = [figures.head_map(final, run.figure("heads.png"), title).name]
    formed = {name: track(monitor.rows, *HEAD_METRICS[name], threshold) for name in final}
    if len(checkpoints) > 1:
        series, steps = {}, {}
        for name, f in formed.items():
            label = f"{name} (L{f['layer']}H{f['head']})"
            pts = sorted((r["step"], r["value"]) for r in monitor.rows if (r["probe"], r["metric"]) == HEAD_METRICS[name]
                         and (r["layer"], r["head"]) == (f["layer"], f["head"]))
            series[label], steps[label] = ([s for s, _ in pts], [v for _, v in pts]), f["threshold_step"]
        names.append(figures.scores_over_steps(series, steps, run.figure("heads_over_training.png"), title).name)
    result = {"steps": [s for s, _ in checkpoints], "formation": formed, "figures": names,
              "heads": {name: grid.tolist() for name, grid in final.items()}}
    run.write_probe_summary(result)
    return result

