"""``interp-causal reproduce EXPERIMENT``: the paper's experiments (docs/science.md §4), one command each.

Each experiment trains (or, for ``gradient``, only differentiates) at a profile's size, writes
``reproduction.json``, ``report.md`` and ``figures/*.png`` into its directory, and returns rows
``{"metric", "ours", "paper", "gap"}`` comparing our numbers with the paper's, and the paper's
claims judged by :data:`interp_causal.results.CHECKS`. Profiles: ``paper``
(the paper's recipe: steps, batch, optimiser), ``quick`` (the shortest recipe that still shows the
result), ``tiny`` (a smoke test of the plumbing, for the test suite; its numbers mean nothing).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from interp_causal.names import CHAIN_EXPERIMENT_GRAPHS, PROFILES
from interp_causal.report.tables import comparison_md
from interp_causal.tasks import CausalGraph, InContextTask, bayes, count_softmax_floor, cross_entropy, frequency_softmax
from interp_causal.training import RunDir, get_recipe, make_config, train_run

EXPERIMENTS: dict[str, Callable[..., dict]] = {}
TINY = dict(steps=24, batch_size=64, eval_every=8, test_size=256)


def experiment(name: str):
    def register(fn):
        EXPERIMENTS[name] = fn
        return fn

    return register


def _row(metric: str, ours: float | None, paper: float | None, note: str = "") -> dict:
    gap = None if ours is None or paper is None else ours - paper
    return {"metric": metric, "ours": ours, "paper": paper, "gap": gap, "note": note}


def _recipe(name: str, profile: str, quick: dict):
    base = get_recipe(name)
    return base.with_overrides(**(TINY if profile == "tiny" else quick if profile == "quick" else {}))


def _train_and_render(task: InContextTask, preset: str, recipe, out: Path, options: dict | None = None,
                      seed: int = 0, probes: bool = True, progress: bool | None = None) -> dict:
    from interp_causal.probing import default_callback
    from interp_causal.report import render_run

    if out.exists():
        shutil.rmtree(out)
    config = make_config(task, preset, recipe, seed, options)
    summary = train_run(config, out, callbacks=default_callback if probes else (), progress=progress)
    return {**render_run(out), "summary": summary}


# ---- experiments --------------------------------------------------------------------------------
@experiment("chain")
def chain(profile: str, out: Path, graph: str = "chain", progress: bool | None = None) -> dict:
    """Figs. 2, 6: S=10, T=20, the disentangled transformer (1, 1), zero init; also icl and random trees."""
    task = InContextTask(CausalGraph.by_name(graph, 20, torch.Generator().manual_seed(0)), 10, 0.1)
    # quick: AdamW instead of the paper's SGD, which needs ~10^4 steps to leave the plateau
    recipe = _recipe("paper-sgd", profile, {}) if profile != "quick" else get_recipe("fast").with_overrides(
        steps=2000, batch_size=1024, eval_every=50)
    n = _train_and_render(task, "paper", recipe, out, progress=progress)
    pos = n["position_attention"][0]
    # how close a softmax readout of in-context counts can get to Bayes at all: the model's floor
    check = task.sample(256 if profile == "tiny" else 2**14, torch.Generator().manual_seed(12345))
    floor = count_softmax_floor(check.tokens, check.target, task)
    bayes_check = float(cross_entropy(check.target, bayes(check.tokens, task)))
    n["readout_floor_gap_pct"] = 100 * (floor - bayes_check) / bayes_check
    return {"numbers": n, "rows": [
        _row("final test loss", n["final_test_loss"], None, "paper: reaches Bayes"),
        _row("Bayes loss", n["bayes_loss"], None, "the same test set"),
        _row("gap to Bayes (%)", n["gap_pct"], 0.0),
        _row("floor of softmax(g_N * counts): gap to Bayes (%)", n["readout_floor_gap_pct"], None,
             "no such readout gets closer"),
        _row("row-argmax of softmax(A(1)) on the parent", pos["argmax_acc"], 1.0, "non-root positions"),
        _row("softmax(A(1)) mass on the parent", pos["mass"], None, "paper: heatmap (Fig. 2)"),
    ]}


@experiment("multi-parent")
def multi_parent(profile: str, out: Path, progress: bool | None = None) -> dict:
    """Figs. 5, 7: two parents {(i-1)//2, i-1}, S=5, T=32, heads (2, 1), AdamW, init 1e-4 N(0, 1)."""
    task = InContextTask(CausalGraph.two_parent(32), 5, 0.1)
    recipe = _recipe("paper-adamw", profile, dict(steps=5000, eval_every=250, test_size=2**13))
    n = _train_and_render(task, "paper", recipe, out, options={"heads": [2, 1]}, progress=progress)
    metrics = RunDir(out).read_metrics()
    drop = n["drop_step"]
    plateau = None
    if drop:
        plateau = min(metrics, key=lambda r: abs(r["step"] - drop / 2))["test_loss"]
    rows = [
        _row("final test loss", n["final_test_loss"], 0.89, "read off the plot, +/- 0.02"),
        _row("Bayes loss", n["bayes_loss"], 0.875),
        _row("final gap to Bayes", n["final_test_loss"] - n["bayes_loss"], 0.015),
        _row("one-parent estimator loss", n["baselines"].get("one_parent"), 1.35),
        _row("plateau loss (at half the drop step)", plateau, 1.175, "paper: 1.15-1.2"),
        _row("drop step (loss below one-parent/Bayes midpoint)", drop, 3500, "paper: 3-4k steps"),
    ]
    for h, s in enumerate(n["position_attention"]):
        best = max((0, 1), key=lambda r: s[f"mass_parent{r}"])
        rows.append(_row(f"head {h}: softmax(A(1)) mass on parent slot {best}", s[f"mass_parent{best}"], None,
                         "each head on a different parent"))
    return {"numbers": n, "rows": rows}


@experiment("standard")
def standard(profile: str, out: Path, progress: bool | None = None) -> dict:
    """Fig. 8: a standard transformer with MLPs on the chain (S=10, T=20), AdamW lr 1e-2, wd 2e-4."""
    task = InContextTask(CausalGraph.chain(20), 10, 0.1)
    recipe = _recipe("paper-standard", profile, dict(steps=600, eval_every=50))
    n = _train_and_render(task, "mlp", recipe, out, progress=progress)
    prev = n["data_attention"][0]
    return {"numbers": n, "rows": [
        _row("final test loss", n["final_test_loss"], 1.77, "read off the plot"),
        _row("Bayes loss", n["bayes_loss"], 1.775),
        _row("gap to Bayes (%)", n["gap_pct"], 0.0),
        _row("layer-1 attention on i-1 (batch mean)", prev["mass"], 0.65, "paper: 0.6-0.7"),
    ]}


@experiment("many-trees")
def many_trees(profile: str, out: Path, progress: bool | None = None) -> dict:
    """Fig. 9: 20 random trees (v2), S=3, T=20, the disentangled transformer, SGD lr 1, constant.
    The graphs train as a sweep's trials (:func:`interp_causal.sweep.run_trials`), stacked: one
    computation steps all of them (:mod:`interp_causal.training.stacked`)."""
    from interp_causal.report import analysis, figures
    from interp_causal.sweep.trials import Trial, run_trials
    from interp_causal.training import load_run

    n_graphs = {"paper": 20, "quick": 6, "tiny": 2}[profile]
    # quick: SGD lr 4 instead of 1 (still constant, zero init) to get most of the way in 3000 steps
    recipe = _recipe("paper-trees", profile, dict(steps=3000, lr=4.0, eval_every=250, test_size=4096))
    if out.exists():
        shutil.rmtree(out)
    graphs = [CausalGraph.random_tree(20, torch.Generator().manual_seed(g), version=2) for g in range(n_graphs)]
    trials = [Trial(f"graph-{g:02d}", make_config(InContextTask(graph, 3, 0.1), "paper", recipe, g), out / f"graph-{g:02d}")
              for g, graph in enumerate(graphs)]
    results = run_trials(trials, probes=False, progress=progress, engine="stacked")
    failed = {name: r["error"] for name, r in results.items() if "error" in r}
    if failed:
        raise RuntimeError(f"many-trees: graphs failed to train: {failed}")
    per_graph, by_pos = [], [[] for _ in range(20)]
    for graph, trial in zip(graphs, trials):
        _, model, _, _ = load_run(trial.run_dir)
        s = analysis.parent_scores(analysis.position_attention(model, 0), graph)[0]
        per_graph.append(s["mass"])
        for i, v in enumerate(s["mass_per_position"]):
            if v is not None:
                by_pos[i].append(v)
    t = torch.tensor(per_graph)
    mean, std = float(t.mean()), float(t.std()) if len(per_graph) > 1 else 0.0
    pos_mean = [float(torch.tensor(v).mean()) if v else None for v in by_pos]
    pos_std = [float(torch.tensor(v).std()) if len(v) > 1 else None for v in by_pos]
    figures.by_position(pos_mean, pos_std, RunDir(out).figure("parent_attention_by_position.png"),
                        f"{n_graphs} random trees (v2), S=3, T=20: softmax(A(1)) mass on the true parent",
                        reference=0.837, reference_label="paper: mean over graphs 0.837")
    # torch's threads per graph: the numbers are the same for the same threads (SGD at lr 4 carries a
    # last-bit difference of another thread count to about 0.02 per graph by the end of the quick profile)
    threads = sorted({RunDir(t.run_dir).read_trial()["threads"] for t in trials})
    numbers = {"per_graph": per_graph, "by_position_mean": pos_mean, "by_position_std": pos_std,
               "threads_per_graph": threads, "figures": ["parent_attention_by_position.png"]}
    return {"numbers": numbers, "rows": [
        _row("mean attention on the true parent", mean, 0.837),
        _row("std across graphs", std, 0.054),
    ]}


@experiment("gradient")
def gradient(profile: str, out: Path, progress: bool | None = None) -> dict:
    """The theorem's key step: the gradient of the reduced model at ``A(1) = 0``, ``A(2) = beta_0 I``,
    beside the chi^2 mutual information, for the chain, icl and a random tree (S=10, T=20)."""
    from probes import GradientProbe, ProbeSuite, chi2_mutual_information, compare_to_mi

    from interp_causal.models import paper_model
    from interp_causal.report import figures

    n = {"paper": 2**16, "quick": 2**14, "tiny": 512}[profile]
    groups = {"paper": 64, "quick": 32, "tiny": 4}[profile]
    if out.exists():
        shutil.rmtree(out)
    rows, numbers = [], {"figures": []}
    for name in ("chain", "icl", "random"):
        gen = torch.Generator().manual_seed(0)
        task = InContextTask(CausalGraph.by_name(name, 20, torch.Generator().manual_seed(1)), 10, 0.1)
        tables = {k: v.repeat_interleave(256, 0) for k, v in task.draw_tables(groups, gen).items()}
        mi = chi2_mutual_information(task.sample_from_tables(tables, gen).tokens.view(groups, 256, 20), 10)
        affinity = transition_affinity(task, n, gen)
        batch = task.sample(n, gen)
        model = paper_model(task, reduced=True, beta0=0.1)
        result = ProbeSuite([GradientProbe(task.graph.parent_lists(), mi, layer=0)]).run(
            model, batch.tokens, targets=batch.target)
        rec = {r.metric: r for r in result}
        descent = -torch.tensor(rec["gradient_norm"].extra["gradient"])
        on_parent = _argmax_on_parent(descent, task.graph)
        vs_affinity = compare_to_mi(-descent[None], affinity, task.graph.parent_lists())
        later = torch.ones(20, 20, dtype=torch.bool).triu()  # j >= i: not a candidate parent, left blank
        name_png = f"gradient_{name}.png"
        figures.side_by_side(
            [(f"{name}: true graph", task.graph.adjacency()),
             # rows shrink like 1/(i+1) under uniform attention: scale each to its largest entry
             ("descent -dL/dA(1), each row / its max |entry|",
              (descent / descent.abs().amax(-1, keepdim=True).clamp_min(1e-30)).masked_fill(later, float("nan"))),
             ("chi-square mutual information (Monte Carlo)", mi.masked_fill(later, float("nan"))),
             ("E[pi(s_i | s_j) / f(s_i)], f: in-context frequency", affinity.masked_fill(later, float("nan")))],
            RunDir(out).figure(name_png), f"{name}, S=10, T=20: the first gradient step against information",
            center=[False, True, False, False])
        numbers["figures"].append(name_png)
        numbers[name] = {"argmax_on_parent": on_parent, "spearman_vs_mi": rec["spearman"].value,
                         "spearman_vs_affinity": float(vs_affinity["spearman"][0])}
        rows.append(_row(f"{name}: row argmax of -gradient on the parent", on_parent, 1.0, "non-root rows"))
        rows.append(_row(f"{name}: row argmax of MI on the parent", rec["argmax_agreement"].value, 1.0))
        rows.append(_row(f"{name}: rank correlation with MI (per row)", rec["spearman"].value, None))
        rows.append(_row(f"{name}: rank correlation with E[pi(s_i|s_j)/f(s_i)] (per row)",
                         numbers[name]["spearman_vs_affinity"], None, "the first-order gradient"))
    return {"numbers": numbers, "rows": rows}


INTERVENTION_RUNS = {  # graph -> run label -> interventions (train --ablate/--clamp)
    "chain": {
        "baseline": {},
        "layer 1 clamped to the parents": {"clamp": ["0.0=parents"]},
        "layer-1 head ablated": {"ablate": ["0.0"]},
        "layer 2 clamped to graph induction": {"clamp": ["1.0=graph_induction"]},
    },
    "two-parent": {
        "baseline": {},
        "layer 1 clamped to the parents": {"clamp": ["0.0=parents:0", "0.1=parents:1"]},
        "layer-1 head 0 ablated": {"ablate": ["0.0"]},
        "layer 2 clamped to graph induction": {"clamp": ["1.0=graph_induction"]},
    },
}
STAGEWISE = "stage-wise (reduced model, Algorithm 1)"


@experiment("interventions")
def interventions(profile: str, out: Path, progress: bool | None = None) -> dict:
    """Causal tests during training: on the chain (S=10, T=20) and the two-parent graph (S=5, T=32,
    heads (2, 1)), the baseline run beside runs with layer 1 clamped to the true parents (Singh et
    al. 2024's clamps), the layer-1 head ablated, layer 2 clamped to the graph-aware induction
    pattern, and, on the chain, the stage-wise training of the paper's Algorithm 1 on the reduced
    model (which has one head per layer: the theorem's single-parent setting). For each run: the
    loss curve against Bayes, the plateau length, the formation steps of the probes that still
    apply (a clamped or ablated head's are imposed) and the final gap."""
    from tqdm.auto import tqdm

    from probes import max_parents

    from interp_causal.probing import default_callback
    from interp_causal.report import figures, render_run
    from interp_causal.training import Interventions

    if out.exists():
        shutil.rmtree(out)
    setups = {
        "chain": (InContextTask(CausalGraph.chain(20), 10, 0.1), [1, 1],
                  _recipe("paper-sgd", profile, {}) if profile != "quick" else get_recipe("fast").with_overrides(eval_every=10)),
        # quick: AdamW lr 3e-2 at batch 256 instead of 1e-2 at 1024 (the paper's multi-parent recipe)
        "two-parent": (InContextTask(CausalGraph.two_parent(32), 5, 0.1), [2, 1],
                       _recipe("paper-adamw", profile, dict(steps=2000, lr=3e-2, batch_size=256, eval_every=50,
                                                            test_size=4096))),
    }
    stagewise = get_recipe("stagewise") if profile != "tiny" else get_recipe("stagewise").with_overrides(
        **{**TINY, "stage_split": TINY["steps"] // 2})
    # the reduced model cannot reach Bayes (its readout W = I makes its logits a probability
    # vector): its plateau ends halfway from the graph-free guess to this floor instead
    check = setups["chain"][0].sample(256 if profile == "tiny" else 2**14, torch.Generator().manual_seed(12345))
    floor = float(cross_entropy(check.target, frequency_softmax(check.tokens, setups["chain"][0])))
    jobs = [(g, label, spec) for g, runs in INTERVENTION_RUNS.items() for label, spec in runs.items()]
    jobs.insert(len(INTERVENTION_RUNS["chain"]), ("chain", STAGEWISE, None))
    results: dict = {g: {} for g in setups}
    for g, label, spec in tqdm(jobs, desc="runs", disable=None if progress is None else not progress):
        task, heads, recipe = setups[g]
        run = out / g / _slug(label)
        if spec is None:
            config = make_config(task, "paper-reduced", stagewise, 0)
        else:
            config = make_config(task, "paper", recipe, 0, {"heads": heads}, interventions=spec)
        summary = train_run(config, run, callbacks=default_callback, progress=False)
        render_run(run)
        results[g][label] = _intervention_numbers(run, summary, Interventions.from_dict(spec), task,
                                                  floor if spec is None else None)

    rows, numbers = [], {"runs": results, "figures": []}
    for g, runs in results.items():
        task = setups[g][0]
        level = "one-parent estimator" if max_parents(task.graph.parent_lists()) > 1 else "graph-free guess"
        base = runs["baseline"]
        refs = {"Bayes": base["bayes_loss"], level: base["plateau_level"]}
        if STAGEWISE in runs:
            numbers[f"{g}_reduced_model_floor"] = floor
            refs["reduced model's floor: softmax(in-context frequencies)"] = floor
            rows.append(_row(f"{g} / reduced model's floor (its readout W = I: softmax of frequencies)", floor, None,
                             "no reduced model gets below this; Bayes is below it"))
        score = next((r["score_series"] for r in runs.values() if r["score_series"]), None)
        name = f"interventions_{g}.png"
        figures.compare_runs(
            {k: r["loss_series"] for k, r in runs.items()}, refs,
            {k: r["score_series"]["values"] for k, r in runs.items() if r["score_series"]},
            score["label"] if score else "induction score", RunDir(out).figure(name),
            f"{g}, S={task.vocab_size}, T={task.seq_len}: what else has to be learned when a mechanism is given or taken away",
            marks={k: r["plateau_steps"] for k, r in runs.items()},
            stage_split=runs[STAGEWISE]["stage_split"] if STAGEWISE in runs else None)
        numbers["figures"].append(name)
        for label, r in runs.items():
            formed = "; ".join(f"{k} {v}" for k, v in r["formed"].items())
            rows.append(_row(f"{g} / {label}: final gap to Bayes (%)", r["gap_pct"], None,
                             f"loss {r['final_test_loss']:.4f}, Bayes {r['bayes_loss']:.4f}"))
            to = "the reduced model's floor" if label == STAGEWISE else "Bayes"
            rows.append(_row(f"{g} / {label}: plateau length (steps)", r["plateau_steps"], None,
                             "never left" if r["plateau_steps"] is None else f"to halfway from the {level} loss to {to}"))
            rows.append(_row(f"{g} / {label}: probes formed at step", None, None, formed))
    return {"numbers": numbers, "rows": rows}


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.split(" (")[0].lower()).strip("-")


def _intervention_numbers(run: Path, summary: dict, interventions, task: InContextTask,
                          target: float | None = None) -> dict:
    """Loss curve, plateau (ended halfway to ``target``, default Bayes), final gap, formation steps
    and the induction score of one run."""
    from probes import max_parents

    from interp_causal.report.run_report import plateau_end

    metrics = RunDir(run).read_metrics()
    steps, level = plateau_end(metrics, max_parents(task.graph.parent_lists()) > 1, target)
    mechanisms = summary.get("mechanisms") or {}
    formed = {}
    for key, m in sorted(mechanisms.items()):
        if not (m is None or isinstance(m, dict)) or key == "copying" and any(k.startswith("copying_parent") for k in mechanisms):
            continue
        if m is None:
            formed[key] = "not found"
        elif m.get("imposed"):
            formed[key] = f"imposed ({m['imposed']})"
        else:
            formed[key] = m["threshold_step"] if m["threshold_step"] is not None else "never"
    induction = next((m for k, m in mechanisms.items() if k == "induction" and m), None)
    series = None
    if induction is not None:  # the induction probe at layer 2, head 0 of every run: comparable across runs
        rows = [r for r in RunDir(run).read_probes() or [] if r["probe"] == induction["probe"]
                and r["metric"] == induction["metric"] and r["layer"] == 1 and r["head"] == 0 and r["value"] is not None]
        pts = sorted((r["step"], r["value"]) for r in rows)
        series = {"label": f"{induction['probe']} {induction['metric']} (layer 2, head 0)",
                  "values": ([s for s, _ in pts], [v for _, v in pts])}
    return {
        "final_test_loss": summary["final_test_loss"], "bayes_loss": summary["bayes_loss"],
        "gap_pct": summary["gap_pct"], "plateau_steps": steps, "plateau_level": level, "formed": formed,
        "interventions": interventions.describe(), "stage_split": summary.get("stage_split"),
        "loss_series": ([r["step"] for r in metrics], [r["test_loss"] for r in metrics]), "score_series": series,
    }


# ---- helpers ------------------------------------------------------------------------------------
def transition_affinity(task: InContextTask, n: int, gen: torch.Generator) -> torch.Tensor:
    """``R[i, j] = E[pi(s_i | s_j) / f(s_i)]`` ``[T, T]`` (``j < i``), ``f`` the in-context frequency of
    ``s_i`` in its sequence, over tables and sequences: what the reduced model's first gradient measures.

    At ``A(1) = 0`` the output is about ``f`` and the loss's derivative at token ``a`` is
    ``-pi(a | s_q) / f(a)``; raising ``A(1)[i, j]`` makes key ``i`` match queries ``s_q = s_j``, so
    ``-dL/dA(1)[i, j]`` is ``R[i, j]`` minus a row constant. With ``f`` replaced by the stationary
    law, ``R[i, p(i)] - 1`` is the chi^2 mutual information of ``s_i`` and its parent, and elsewhere
    ``R[i, j]`` is an inner product bounded by it (Cauchy-Schwarz, then data processing): the row
    argmax is the parent, but the other entries follow the one-step table, not the information.
    """
    tables = task.draw_tables(n, gen)
    x = task.sample_from_tables(tables, gen).tokens
    pi, rows, T = tables[1].double(), torch.arange(n), task.seq_len
    freq = torch.nn.functional.one_hot(x, task.vocab_size).double().mean(1)  # [n, S]
    R = torch.zeros(T, T, dtype=torch.float64)
    for i in range(T):
        inv = 1.0 / freq[rows, x[:, i]]
        for j in range(i):
            R[i, j] = (pi[rows, x[:, j], x[:, i]] * inv).mean()
    return R.float()


def _argmax_on_parent(descent: torch.Tensor, graph: CausalGraph) -> float:
    rows = [(i, ps[0]) for i, ps in enumerate(graph.parents) if ps and i > 1]
    return sum(int(descent[i, :i].argmax()) == p for i, p in rows) / len(rows)


def reproduce(name: str, profile: str = "quick", out: str | Path | None = None, graph: str | None = None,
              progress: bool | None = None) -> dict:
    """Run experiment ``name`` at ``profile`` into ``out`` (default ``runs/reproduce/NAME[-GRAPH]-PROFILE``);
    write ``reproduction.json`` (rows beside the paper's, the numbers behind them) and ``report.md``
    there and return what ``reproduction.json`` holds."""
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment: unknown {name!r}; expected one of {', '.join(EXPERIMENTS)}")
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {PROFILES}, got {profile!r}")
    if graph is not None and name != "chain":
        raise ValueError(f"graph: only the chain experiment takes --graph (chain, icl, random), not {name}")
    if graph is not None and graph not in CHAIN_EXPERIMENT_GRAPHS:
        raise ValueError(f"graph: expected one of {CHAIN_EXPERIMENT_GRAPHS}, got {graph!r}")
    label = name if graph in (None, "chain") else f"{name}-{graph}"
    out = Path(out) if out is not None else Path("runs") / "reproduce" / f"{label}-{profile}"
    started = time.perf_counter()
    kwargs = {"graph": graph} if graph is not None else {}
    result = EXPERIMENTS[name](profile, out, progress=progress, **kwargs)
    from interp_causal import results

    reproduction = {"experiment": label, "profile": profile, "wall_s": round(time.perf_counter() - started, 1),
                    "threads": torch.get_num_threads(), "date": results.now(), "machine": results.machine(),
                    "rows": result["rows"], "numbers": result["numbers"]}
    reproduction = json.loads(json.dumps(reproduction, default=float))
    reproduction["checks"] = results.check(name, reproduction)
    run = RunDir(out)
    run.write_reproduction(reproduction)
    if "title" in result["numbers"]:  # a training run drawn by render_run: its report, opened by the table
        from interp_causal.report.run_report import write_report

        write_report(out, result["numbers"])
    else:
        run.write_report(comparison_md(reproduction) + _figures_md(result["numbers"].get("figures", [])))
    return reproduction


def _figures_md(names: list[str]) -> str:
    return "\n".join(f"![{n}]({RunDir.figures}/{n})\n" for n in names)
