"""``interp-causal report RUN_DIR``: figures and a one-page ``report.md`` for any training run."""

from __future__ import annotations

from pathlib import Path

import torch

from interp_causal.report import analysis, figures
from interp_causal.report.tables import saved_comparison
from interp_causal.training import RunDir
from interp_causal.training.interventions import Interventions

SCORE_SOURCES = {  # label on the figure -> summary key of probes.summarize
    "parent attention (layer-0 mass)": "parent_attention",
    "parent copying (probe selectivity)": "copying",
    "induction (query mass on matches)": "induction",
}


def plateau_end(metrics: list[dict], multi_parent: bool, target: float | None = None) -> tuple[int | None, float]:
    """``(step, level)``: the plateau level (the one-parent estimator's loss on a multi-parent graph,
    the better of the uniform and unigram guesses otherwise: what a model reaches before it uses
    the graph) and the first evaluation after step 0 whose test loss is below halfway from that
    level to ``target`` (default Bayes; None if none is)."""
    last = metrics[-1]
    if multi_parent and "one_parent_loss" in last:
        level = last["one_parent_loss"]
    else:  # the better of the graph-free guesses (unigram counts can be worse than uniform at small alpha)
        level = min(last["uniform_loss"], last["unigram_loss"])
    half = 0.5 * (level + (last["bayes_loss"] if target is None else target))
    return next((r["step"] for r in metrics if r["step"] > 0 and r["test_loss"] < half), None), level


def drop_step(metrics: list[dict]) -> int | None:
    """When a multi-parent model leaves the one-parent plateau (:func:`plateau_end`; None without
    the one-parent baseline)."""
    return plateau_end(metrics, True)[0] if "one_parent_loss" in metrics[-1] else None


def render_run(run_dir: str | Path, batch_size: int = 512, seed: int = 0) -> dict:
    """Write ``figures/*.png`` and ``report.md`` into ``run_dir``; return the numbers they show."""
    from probes import summarize

    from interp_causal.models import is_paper_model, paper_layout
    from interp_causal.probing import probe_batch
    from interp_causal.training import load_run

    run = RunDir(run_dir)
    if not run.holds_run() and saved_comparison(run.path):
        raise FileNotFoundError(f"run_dir: {run.path} holds a reproduction without a training run of its own "
                                f"(no {RunDir.checkpoint}); run `interp-causal reproduce` again to redraw it")
    task, model, config, state = load_run(run.path)
    graph = task.graph
    metrics = run.read_metrics()
    probe_rows = run.read_probes()
    mechanisms = summarize(probe_rows) if probe_rows is not None else None
    batch = probe_batch(task, batch_size, seed)
    title = f"{graph.name}, S={task.vocab_size}, T={task.seq_len}, {config['model']['preset']}, step {state['step']}"
    numbers: dict = {
        "title": title,
        "step": int(state["step"]),
        "final_test_loss": metrics[-1]["test_loss"],
        "bayes_loss": metrics[-1]["bayes_loss"],
        "gap_pct": 100 * (metrics[-1]["test_loss"] - metrics[-1]["bayes_loss"]) / metrics[-1]["bayes_loss"],
        "baselines": {k[: -len("_loss")]: v for k, v in metrics[-1].items() if k.endswith("_loss") and k not in ("test_loss", "train_loss")},
        "drop_step": drop_step(metrics),
        "mechanisms": mechanisms,
    }
    interventions = Interventions.from_dict(config.get("interventions"))
    if interventions:
        numbers["interventions"] = interventions.describe()
        if mechanisms:
            interventions.mark(mechanisms)
    if config["recipe"].get("stage_split"):
        numbers["stage_split"] = config["recipe"]["stage_split"]

    data = analysis.mean_pattern(model, batch.tokens, 0)
    numbers["data_attention"] = _strip(analysis.parent_scores(data, graph))
    learned = []
    if is_paper_model(model):
        pos = analysis.position_attention(model, 0)
        scores = analysis.parent_scores(pos, graph)
        numbers["position_attention"] = _strip(scores)
        learned = [(f"learned softmax(A(1)) position block, head {h}", pos[h]) for h in range(pos.shape[0])]
        slots = analysis.head_slots(scores, graph)
        a2_index, w_index, a2_out, w_out, ticks = analysis.predicted_blocks(paper_layout(model), graph, slots)
        from interp_causal.models import attention_matrices, readout

        A2 = attention_matrices(model, 1)[0][a2_index][:, a2_index]
        figures.blocks(A2, readout(model)[w_index], a2_out, w_out, run.figure("blocks.png"),
                       title + ", token features only", ticks[: len(a2_index) // task.vocab_size], ticks)
    data_panels = [(f"layer-1 attention averaged over {batch_size} sequences, head {h}", data[h]) for h in range(data.shape[0])]
    figures.graph_and_attention(graph.adjacency(), learned, data_panels, run.figure("graph_attention.png"), title)
    scores, formed = _probe_series(probe_rows, mechanisms)
    figures.training_curves(metrics, scores, formed, run.figure("training.png"), title,
                            numbers.get("stage_split"), numbers.get("interventions", ()))
    grids = _head_grids(probe_rows, mechanisms, model.cfg.n_layers, model.cfg.n_heads)
    if grids:  # a multi-head model: where each mechanism forms, not only its best head
        figures.head_grids_over_training(grids, run.figure("heads_over_training.png"), title)
    numbers["figures"] = run.figure_names()
    write_report(run.path, numbers)
    return numbers


def _head_grids(rows: list[dict] | None, mechanisms: dict | None, n_layers: int, n_heads: int,
                max_steps: int = 6) -> dict:
    """``{label: [(step, [layers, heads]), ...]}`` of each per-head mechanism's probe score at up to
    ``max_steps`` probed steps (spread over the run, and the best head's formation step); empty for
    one-head models or without probes."""
    if n_heads < 2 or not rows or not mechanisms:
        return {}
    out = {}
    for label, key in SCORE_SOURCES.items():
        m = mechanisms.get(key)
        if not m or m.get("head") is None:
            continue
        mine = [r for r in rows if r["probe"] == m["probe"] and r["metric"] == m["metric"]
                and r["head"] is not None and r["value"] is not None and r.get("step") is not None]
        steps = sorted({r["step"] for r in mine})
        if not steps:
            continue
        # evenly spread over the run's steps, and the step at which the best head formed
        targets = [steps[-1] * i / (max_steps - 2) for i in range(max_steps - 1)] + [m.get("threshold_step") or 0]
        picks = sorted({min(steps, key=lambda s: abs(s - t)) for t in targets})
        series = []
        for step in picks:
            grid = torch.full((n_layers, n_heads), float("nan"))
            for r in mine:
                if r["step"] == step and r["layer"] < n_layers and r["head"] < n_heads:
                    grid[r["layer"], r["head"]] = r["value"]
            series.append((step, grid))
        out[label] = series
    return out


def _strip(scores: list[dict]) -> list[dict]:
    """Per-head scores without the per-position arrays (those stay in the figures)."""
    return [{k: round(v, 4) for k, v in s.items() if not k.endswith("per_position") and k != "score"} for s in scores]


def _probe_series(rows: list[dict] | None, mechanisms: dict | None) -> tuple[dict, dict]:
    """The summary's chosen (probe, metric, layer, head) of each mechanism as a step series."""
    if mechanisms is None or rows is None:
        return {}, {}
    series, formed = {}, {}
    for label, key in SCORE_SOURCES.items():
        # multi-parent graphs: one series per parent slot (``copying`` has only those)
        slots = sorted(k for k in mechanisms if k.startswith(key + "_parent") and mechanisms[k])
        for name in ([key] if mechanisms.get(key) and not slots else slots):
            m = mechanisms[name]
            pts = sorted((r["step"], r["value"]) for r in rows if r["probe"] == m["probe"] and r["metric"] == m["metric"]
                         and r["layer"] == m["layer"] and r["head"] == m["head"] and r["value"] is not None)
            full = label if name == key else f"{label}, parent slot {name[len(key) + len('_parent'):]}"
            series[full] = ([s for s, _ in pts], [v for _, v in pts])
            formed[full] = m["threshold_step"]
    return series, formed


def _other_heads(m: dict) -> str:
    """``"; also above threshold: L0H1 0.962 (formed 40), ..."``: the mechanism's other heads."""
    others = [h for h in m.get("heads", []) if (h["layer"], h["head"]) != (m["layer"], m["head"])]
    if not others:
        return ""
    return "; also above threshold: " + ", ".join(
        f"L{h['layer']}H{h['head']} {h['value']:.3f} (formed at step {h['threshold_step']})" for h in others)


def write_report(run_dir: str | Path, numbers: dict) -> None:
    """Write ``run_dir/report.md`` from :func:`render_run`'s ``numbers``, opened by the comparison
    with the paper when ``run_dir`` holds a reproduction's ``reproduction.json``."""
    comparison = saved_comparison(run_dir)
    lines = [f"{'##' if comparison else '#'} {numbers['title']}", "", "| quantity | value |", "|---|---|",
             f"| final test loss | {numbers['final_test_loss']:.4f} |",
             f"| Bayes loss | {numbers['bayes_loss']:.4f} |",
             f"| gap to Bayes | {numbers['gap_pct']:+.2f}% |"]
    lines += [f"| {k} baseline loss | {v:.4f} |" for k, v in numbers["baselines"].items() if k != "bayes"]
    lines += [f"| intervention | {line} |" for line in numbers.get("interventions", [])]
    if numbers.get("stage_split"):
        lines.append(f"| stage-wise (Algorithm 1) | stage 1 (only layer 1 learns) to step {numbers['stage_split']}, "
                     "then stage 2 (only layer 2) |")
    if numbers["drop_step"] is not None:
        lines.append(f"| leaves the one-parent plateau at step | {numbers['drop_step']} |")
    for key, label in (("position_attention", "softmax(A(1))"), ("data_attention", "layer-1 attention (batch mean)")):
        for h, s in enumerate(numbers.get(key, [])):
            parts = ", ".join(f"{k} {v:.3f}" for k, v in s.items())
            lines.append(f"| {label}, head {h} | {parts} |")
    for key, m in (numbers["mechanisms"] or {}).items():
        if isinstance(m, dict):
            where = f"layer {m['layer']}" + (f" head {m['head']}" if m["head"] is not None else "")
            lines.append(f"| {key.replace('_', ' ')} | {where}: {m['metric']} {m['value']:.3f}, "
                         f"formed at step {m['threshold_step']}, steepest rise at step {m['steepest_step']}"
                         + (f"; imposed ({m['imposed']}), not learned" if m.get("imposed") else "")
                         + _other_heads(m) + " |")
    lines += ["", "### Figures" if comparison else "## Figures", ""]
    captions = {
        "graph_attention.png": "The true graph beside what the first layer learned: the position block of A(1) "
                               "after a row softmax, and the data-dependent attention averaged over a batch.",
        "blocks.png": "The second layer's A(2) and the readout W; red boxes mark where the theory puts their weight.",
        "training.png": "Test loss against Bayes and the baselines, and the probes' scores on the same step axis.",
        "heads_over_training.png": "Each mechanism's probe score for every layer and head, at steps spread over "
                                   "training: where in a multi-head model it forms, and when.",
    }
    for name in numbers["figures"]:
        lines += [f"![{name}]({RunDir.figures}/{name})", "", captions.get(name, ""), ""]
    RunDir(run_dir).write_report(comparison + "\n".join(lines) + "\n")
