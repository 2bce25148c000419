"""``make bench``: throughput and overhead, each against a baseline measured in the same run.

Prints one table and writes ``benchmarks/results.json``: a list of rows

- ``name``; ``value`` and ``unit``: our median (a time, or a throughput such as ``seq/s``);
- ``baseline`` (what we compare with) and ``baseline_value``: its median, in the same unit;
- the figure of merit, where there is one: ``speedup`` (how many times faster we are: baseline
  time / our time, or our throughput / the baseline's) or ``overhead`` (the extra time we add, as a
  fraction: 0.03 is 3%). The other is ``null``.

Medians over repeated runs; the machine's load average is printed before and after, because this
machine is shared and noisy.

    python benchmarks/run.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from baselines import DenseCatFormer, PlainAttnOnly, naive_sample  # noqa: E402

from interp_causal.models import paper_model, standard_model  # noqa: E402
from interp_causal.tasks import CausalGraph, InContextTask  # noqa: E402
from interp_causal.training import Trainer, get_recipe  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(name: str, value: float, unit: str, baseline: str, baseline_value: float, merit: str | None = None,
        paired_ratio: float | None = None) -> dict:
    """One result. merit: ``"time"`` (lower is better) or ``"throughput"`` (higher is better), both
    reported as ``speedup``; ``"overhead"``: the extra time as a fraction, from ``paired_ratio``
    (ours / baseline over paired runs) when given; None: no figure of merit."""
    ratio = paired_ratio if paired_ratio is not None else value / baseline_value
    speedup = {"time": 1 / ratio, "throughput": ratio}.get(merit)
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": round(baseline_value, 4),
        "speedup": None if speedup is None else round(speedup, 3),
        "overhead": round(ratio - 1, 4) if merit == "overhead" else None,
    }


# ---- sampling ---------------------------------------------------------------------------------
def bench_sampler(name: str, task: InContextTask, n: int, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    ours = median_time(lambda: task.sample(n, gen), repeats)
    naive = median_time(lambda: naive_sample(task, n, gen), max(3, repeats // 2))
    return row(name, n / ours, "seq/s", "naive: Dirichlet tables, torch.multinomial per position", n / naive,
               "throughput")


def bench_sampler_in_c(name: str, task: InContextTask, n: int, repeats: int) -> dict:
    """The sampler in C (``tasks/sampler.c``) against the same sampler in torch ops
    (``INTERP_CAUSAL_NATIVE=0``), alternated, at the process's threads: the urn's draws after torch's
    random numbers (the same bits), or a single-parent graph's whole sampler (its own stream)."""
    from interp_causal.tasks.task import sampler_library

    if sampler_library() is None:
        raise RuntimeError("tasks/sampler.c could not be built here: no C compiler?")
    gen = torch.Generator().manual_seed(0)
    ours, theirs = compiled_against_torch(lambda: median_time(lambda: task.sample(n, gen), 3), repeats)
    return row(name, n / ours, "seq/s", "the same sampler's draws in torch ops", n / theirs, "throughput")


def compiled_against_torch(measure: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Medians of ``measure()`` with the package's C code on and off (``INTERP_CAUSAL_NATIVE``),
    alternated ``repeats`` times; the switch is restored afterwards."""
    from interp_causal import compiled

    times: dict[str, list[float]] = {"1": [], "0": []}
    before = os.environ.get(compiled.ENV_SWITCH)
    try:
        for i in range(repeats):
            for way in (("1", "0") if i % 2 == 0 else ("0", "1")):
                os.environ[compiled.ENV_SWITCH] = way
                times[way].append(measure())
    finally:
        if before is None:
            os.environ.pop(compiled.ENV_SWITCH, None)
        else:
            os.environ[compiled.ENV_SWITCH] = before
    return statistics.median(times["1"]), statistics.median(times["0"])


# ---- training steps ---------------------------------------------------------------------------
def loss_of(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * logits.log_softmax(-1)).sum(-1).mean()


def step_time(model: torch.nn.Module, forward: Callable, task: InContextTask, recipe: str, repeats: int) -> float:
    """Median seconds of one optimiser step (forward, backward, update) on a fixed batch of 1024."""
    batch = task.sample(1024, torch.Generator().manual_seed(0))
    opt = get_recipe(recipe).make_optimizer(model.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        loss_of(forward(model, batch.tokens), batch.target).backward()
        opt.step()

    return median_time(step, repeats, warmup=3)


def bench_paper_step(name: str, task: InContextTask, heads: tuple[int, ...], recipe: str, repeats: int) -> dict:
    """``paper_model``'s training step as the trainer takes it, against the dense plain-torch formula."""
    model = paper_model(task, heads=heads, init=get_recipe(recipe).init)
    trainer = Trainer(model, task, get_recipe(recipe).with_overrides(test_size=8), progress=False)
    batch = task.sample(1024, torch.Generator().manual_seed(0))
    ours = median_time(lambda: trainer.train_step(batch), repeats, warmup=3)
    dense = DenseCatFormer(task.vocab_size, task.seq_len, heads)
    base = step_time(dense, lambda m, x: m(x), task, recipe, repeats)
    return row(name, 1000 * ours, "ms", f"plain-torch dense CatFormer {heads}", 1000 * base, "time")


def bench_hooked_dense_step(task: InContextTask, repeats: int) -> dict:
    """The same paper model stepped through the generic HookedTransformer forward (no structured path)."""
    model = paper_model(task)
    hooked = step_time(model, lambda m, x: m(x, return_type="logits")[:, -1], task, "paper-sgd", repeats)
    dense = step_time(DenseCatFormer(task.vocab_size, task.seq_len), lambda m, x: m(x), task, "paper-sgd", repeats)
    return row("paper_step_ms_h11_hooked_forward", 1000 * hooked, "ms", "plain-torch dense CatFormer (1, 1)",
               1000 * dense, "time")


def bench_standard_step(task: InContextTask, repeats: int) -> dict:
    model = standard_model(task, n_layers=2, n_heads=1)
    ours = step_time(model, lambda m, x: m(x, return_type="logits")[:, -1], task, "paper-adamw", repeats)
    dense = step_time(DenseCatFormer(task.vocab_size, task.seq_len), lambda m, x: m(x), task, "paper-adamw", repeats)
    return row("standard_attn_only_step_ms", 1000 * ours, "ms", "plain-torch dense CatFormer (1, 1)", 1000 * dense,
               "time")


def bench_standard_multilayer_step(task: InContextTask, repeats: int) -> dict:
    """A 3-layer, 4-head attention-only model (d_model 64) stepped as the trainer steps it (the
    ``standard`` recipe, batch 1024), against the same model written in plain torch."""
    model = standard_model(task, n_layers=3, n_heads=4, d_model=64)
    trainer = Trainer(model, task, get_recipe("standard").with_overrides(test_size=8), progress=False)
    batch = task.sample(1024, torch.Generator().manual_seed(0))
    ours = median_time(lambda: trainer.train_step(batch), repeats, warmup=3)
    plain = step_time(PlainAttnOnly(task.vocab_size, task.seq_len, 3, 4, 64), lambda m, x: m(x), task, "standard", repeats)
    return row("standard_3x4_d64_step_ms", 1000 * ours, "ms", "plain-torch attention-only transformer (3 x 4, d 64)",
               1000 * plain, "time")


def bench_layer1_tables(name: str, task: InContextTask, heads: tuple[int, ...], recipe: str, repeats: int) -> dict:
    """The paper model's training step with layer 1 read through exp-tables and matrix products
    (small vocabularies, ``structured.TABLES_MAX_VOCAB``), against the gathered ``[B, n, n]``
    patterns (the path before), alternated."""
    from interp_causal.models import structured

    model = paper_model(task, heads=heads, init=get_recipe(recipe).init)
    trainer = Trainer(model, task, get_recipe(recipe).with_overrides(test_size=8), progress=False)
    batch = task.sample(1024, torch.Generator().manual_seed(0))
    saved, times = structured.TABLES_MAX_VOCAB, {True: [], False: []}
    try:
        for i in range(repeats):
            for tables in ((True, False) if i % 2 == 0 else (False, True)):
                structured.TABLES_MAX_VOCAB = 10**6 if tables else 0
                times[tables].append(median_time(lambda: trainer.train_step(batch), 5, warmup=2))
    finally:
        structured.TABLES_MAX_VOCAB = saved
    return row(name, 1000 * statistics.median(times[True]), "ms", "layer 1 as gathered [B, n, n] patterns",
               1000 * statistics.median(times[False]), "time")


def bench_kernel_step(name: str, task: InContextTask, heads: tuple[int, ...], K: int, repeats: int) -> dict:
    """The structured path's forward and backward pass (loss included, no optimiser) for ``K``
    stacked paper models at batch 1024: the compiled kernel (``models/native.py``) against the
    same path in torch ops (``INTERP_CAUSAL_NATIVE=0``), alternated in one process."""
    from interp_causal.models import native, structured
    from interp_causal.training.trainer import soft_target_loss

    models = [paper_model(task, heads=heads, init="normal", seed=k) for k in range(K)]
    params = [p for m in models for p in m.parameters() if p.requires_grad]
    batch = task.sample(1024 * K, torch.Generator().manual_seed(0))
    tokens, target = batch.tokens.view(K, 1024, -1), batch.target.view(K, 1024, -1)

    def step():
        for p in params:
            p.grad = None
        soft_target_loss(structured.stacked_last_logits(models, tokens), target).sum().backward()

    if native.library() is None:
        raise RuntimeError("the compiled kernel is unavailable here: no C compiler?")
    ours, theirs = compiled_against_torch(lambda: median_time(step, 5, warmup=2), repeats)
    return row(name, 1000 * ours, "ms", "the structured path in torch ops", 1000 * theirs, "time")


def bench_stacked_trees(K: int, steps: int, repeats: int) -> dict:
    """Fig. 9's many-trees training: K graphs (S = 3, SGD lr 1, batch 1024), all in (sampling, step,
    evaluations) for ``steps`` steps, stacked (``training.fit_stacked``) against K trainers one after
    another in this process, alternated; ms per model-step."""
    from interp_causal.training import fit_stacked

    recipe = get_recipe("paper-trees").with_overrides(steps=steps, eval_every=max(1, steps // 2), test_size=2**13)

    def trainers() -> list[Trainer]:
        out = []
        for g in range(K):
            task = InContextTask(CausalGraph.random_tree(20, torch.Generator().manual_seed(g), version=2), 3, 0.1)
            out.append(Trainer(paper_model(task, init="zero", seed=g), task, recipe, seed=g, progress=False))
        return out

    times = {"stacked": [], "one by one": []}
    for i in range(repeats):
        for way in (("stacked", "one by one") if i % 2 == 0 else ("one by one", "stacked")):
            group = trainers()
            start = time.perf_counter()
            if way == "stacked":
                fit_stacked(group, progress=False)
            else:
                for trainer in group:
                    trainer.fit()
            times[way].append((time.perf_counter() - start) / (K * steps))
    return row(f"stacked_trees_step_ms_k{K}", 1000 * statistics.median(times["stacked"]), "ms per model-step",
               f"{K} trainers one after another", 1000 * statistics.median(times["one by one"]), "time")


def bench_stacked_trees_processes(K: int, steps: int, repeats: int) -> dict:
    """Fig. 9's K trees through ``run_trials(engine="stacked")`` as ``reproduce many-trees`` runs
    them: by default split over torch's threads as processes at one thread each, against one
    process stacking all K on all threads (``cpus_per_trial`` = threads), alternated; ms per
    model-step, wall time from the call to its return (process start-up included)."""
    from interp_causal.sweep.trials import Trial, run_trials
    from interp_causal.training import make_config

    recipe = get_recipe("paper-trees").with_overrides(steps=steps, eval_every=max(1, steps // 2), test_size=2**13)
    configs = [make_config(InContextTask(CausalGraph.random_tree(20, torch.Generator().manual_seed(g), version=2), 3,
                                         0.1), "paper", recipe, g) for g in range(K)]
    threads = torch.get_num_threads()
    times: dict[str, list[float]] = {"processes": [], "threads": []}
    for i in range(repeats):
        for way in (("processes", "threads") if i % 2 == 0 else ("threads", "processes")):
            with tempfile.TemporaryDirectory() as tmp:
                trials = [Trial(f"graph-{g:02d}", c, Path(tmp) / f"graph-{g:02d}") for g, c in enumerate(configs)]
                start = time.perf_counter()
                run_trials(trials, probes=False, progress=False, engine="stacked",
                           cpus_per_trial=None if way == "processes" else threads)
                times[way].append((time.perf_counter() - start) / (K * steps))
    return row(f"stacked_trees_step_ms_k{K}_processes", 1000 * statistics.median(times["processes"]),
               "ms per model-step", f"one process stacking all {K} on {threads} threads",
               1000 * statistics.median(times["threads"]), "time")


def bench_last_position_step(task: InContextTask, repeats: int) -> dict:
    """Fig. 8's standard transformer (2 layers, an MLP, batch 1024) stepped as the trainer steps it
    (``auto``: its last block at the last position only), against its own forward (``hooked``),
    alternated."""
    trainers = {f: Trainer(standard_model(task, mlp=True), task, get_recipe("paper-standard").with_overrides(test_size=8),
                           progress=False, forward=f) for f in ("auto", "hooked")}
    batch = task.sample(1024, torch.Generator().manual_seed(0))
    times = {f: [] for f in trainers}
    for i in range(repeats):
        for f in (("auto", "hooked") if i % 2 == 0 else ("hooked", "auto")):
            times[f].append(median_time(lambda: trainers[f].train_step(batch), 3, warmup=1))
    return row("standard_mlp_step_ms_last_position", 1000 * statistics.median(times["auto"]), "ms",
               "the same step through the model's own forward", 1000 * statistics.median(times["hooked"]), "time")


def bench_all_in_step(name: str, task: InContextTask, heads: tuple[int, ...], recipe: str, steps: int,
                      repeats: int) -> list[dict]:
    """Wall time per step of a paper recipe as ``reproduce`` trains it: the recipe's sampling (and
    pool), evaluations, checkpoints and the default probes, in the steady state (from the first
    evaluation to the end of ``steps`` steps: a worker's first pool is waited for, its later ones
    are not). Two rows: the loop as a paper-length run takes it (``Trainer(prefetch="auto")``)
    against the bare training step on a fixed batch (what ``paper_step_ms_*`` measures); and the
    data drawn in a worker process against drawn in process (alternated runs)."""
    from interp_causal.probing import default_callback
    from interp_causal.training import attach_callbacks, make_config, start_run
    from interp_causal.training.prefetch import prefetch_wanted

    base = get_recipe(recipe)
    config = make_config(task, "paper", base.with_overrides(steps=steps), 0, {"heads": list(heads)})
    model = paper_model(task, heads=heads, init=base.init)
    trainer = Trainer(model, task, base.with_overrides(test_size=8), progress=False)
    batch = task.sample(1024, torch.Generator().manual_seed(0))
    step = median_time(lambda: trainer.train_step(batch), 20, warmup=3)

    def run(prefetch: bool) -> float:
        """Seconds per step from the first evaluation to the last (steps, sampling, evaluations,
        checkpoints, probes), without building the model and the test set."""
        with tempfile.TemporaryDirectory() as tmp:
            trainer = start_run(config, Path(tmp) / "run", progress=False)
            attach_callbacks(trainer, default_callback)
            trainer.prefetch = prefetch
            trainer.fit()
            first, last = trainer.history[1], trainer.history[-1]
            return (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])

    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeats):
        for prefetch in ((True, False) if i % 2 == 0 else (False, True)):
            times[prefetch].append(run(prefetch))
    worker, in_process = statistics.median(times[True]), statistics.median(times[False])
    ours = worker if prefetch_wanted("auto", base.steps, task) else in_process
    return [row(name, 1000 * ours, "ms", "the bare training step on a fixed batch", 1000 * step, "overhead"),
            row(f"{name}_prefetch", 1000 * worker, "ms", "the same loop drawing its data in process",
                1000 * in_process, "time")]


# ---- probing ----------------------------------------------------------------------------------
def bench_probe_overhead(pairs: int, steps: int) -> dict:
    """Wall time of training (paper model, chain, batch 1024, evaluations and checkpoints included)
    with the default probe suite every 50 steps, against the same run without it; paired runs,
    alternating which goes first."""
    from probes import every

    from interp_causal.probing import default_callback

    task = InContextTask(CausalGraph.chain(20), 10, 0.1)
    recipe = get_recipe("fast").with_overrides(steps=steps, batch_size=1024, eval_every=50)

    def run(probed: bool) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(paper_model(task), task, recipe, run_dir=tmp, progress=False)
            if probed:
                trainer.callbacks.append(default_callback(trainer, schedule=every(50)))
            start = time.perf_counter()
            trainer.fit()
            return time.perf_counter() - start

    run(True)  # warm-up: first calls allocate and import
    with_probes, without = [], []
    for i in range(pairs):
        order = (True, False) if i % 2 == 0 else (False, True)
        for probed in order:
            (with_probes if probed else without).append(run(probed))
    ratios = [a / b for a, b in zip(with_probes, without)]
    return row("probe_overhead", statistics.median(with_probes), "s", "the same training without probes",
               statistics.median(without), "overhead", paired_ratio=statistics.median(ratios))


def bench_suite_vs_detect_head(n_seq: int, repeats: int) -> dict:
    """Previous-token, duplicate-token and induction scores of every head: one batched ProbeSuite
    pass against TransformerLens ``detect_head`` called per sequence (its list form)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.head_detector import detect_head

    from probes import InductionProbe, PreviousTokenAttention, ProbeSuite, repeated_random_tokens
    from probes.testing import PLANTED, TokenSeqModel, planted_weights

    model = HookedTransformer(HookedTransformerConfig(**PLANTED.hooked_config()))
    model.load_state_dict({**model.state_dict(), **planted_weights()})
    model.eval()
    tokens = repeated_random_tokens(n_seq, 16, PLANTED.d_vocab, torch.Generator().manual_seed(0))  # T = 32 < n_ctx
    suite = ProbeSuite([PreviousTokenAttention(), InductionProbe()])
    wrapped = TokenSeqModel(model, tokens)
    names = {"previous_token_head": ("previous_token", "score"), "duplicate_token_head": ("induction", "duplicate_token"),
             "induction_head": ("induction", "prefix_matching")}  # fmt: skip

    def theirs():
        return {n: detect_head(wrapped, list(wrapped.seqs), n, error_measure="mul") for n in names}

    got = {(r.probe, r.metric, r.layer, r.head): r.value for r in suite.run(model, tokens)}
    want = theirs()
    diff = max(abs(got[(p, m, l, h)] - float(want[n][l, h])) for n, (p, m) in names.items() for l in range(2) for h in range(2))
    if diff > 1e-5:
        raise AssertionError(f"suite and detect_head disagree by {diff}")
    ours = median_time(lambda: suite.run(model, tokens), repeats)
    base = median_time(theirs, max(2, repeats // 3))
    return row("suite_vs_detect_head_ms", 1000 * ours, "ms", f"detect_head per sequence, {n_seq} sequences",
               1000 * base, "time")


def bench_gpt2_small(repeats: int) -> list[dict]:
    """A GPT-2-small-sized ``transformers`` model with random weights, 256 sequences x 128 tokens:
    the suite (previous-token, duplicate-token, induction) against a plain forward of the same
    batch, in time and in peak memory above the model's own (each phase in a fresh process); and
    TransformerLens ``run_with_cache`` + ``detect_head`` per sequence on 16 sequences against the
    suite on the same 16, whose scores must agree to 1e-5."""
    def phase(name: str, n: int = 256) -> dict:
        done = subprocess.run([sys.executable, str(HERE / "gpt2_small.py"), name, str(n)], check=True,
                              capture_output=True, text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    suite = [phase("suite") for _ in range(repeats)]
    forward = [phase("forward") for _ in range(repeats)]
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    detect = phase("detect_head", 16)
    if detect["max_abs_diff"] > 1e-5:
        raise AssertionError(f"suite and detect_head disagree by {detect['max_abs_diff']}")
    return [
        row("gpt2_small_suite_s", med(suite, "seconds"), "s", "plain forward of the same 256 x 128 batch",
            med(forward, "seconds"), "time"),
        row("gpt2_small_suite_peak_mb", med(suite, "peak_mb"), "MB", "plain forward's peak above the model",
            med(forward, "peak_mb")),
        row("gpt2_small_vs_detect_head_ms", 1000 * detect["suite_seconds"] / 16, "ms/seq",
            "run_with_cache + detect_head per sequence", 1000 * detect["seconds"] / 16, "time"),
    ]


# ---- end to end -------------------------------------------------------------------------------
def bench_demo(repeats: int) -> dict:
    """``interp-causal demo`` end to end in a fresh process, against the start-up of a process that
    only imports what the demo imports (torch, TransformerLens)."""
    exe = str(Path(sys.executable).with_name("interp-causal"))

    def demo():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([exe, "demo", "--quiet", "--out", f"{tmp}/demo"], check=True, capture_output=True)

    def imports():
        code = "import torch, transformer_lens, interp_causal.training, probes"
        subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, capture_output=True)

    ours = median_time(demo, repeats, warmup=0)
    base = median_time(imports, repeats, warmup=0)
    return row("demo_wall_s", ours, "s", "start-up: import torch + transformer_lens", base)


def bench_demo_tl4(repeats: int) -> dict:
    """``interp-causal demo`` under TransformerLens 4.3 (``.venv-tl4``, the TransformerBridge)
    against 3.9 (this environment, ``HookedTransformer``): the training time each demo reports,
    alternating the two so that the machine's drift falls on both."""
    import re

    tl4 = HERE.parent / ".venv-tl4" / "bin" / "interp-causal"
    if not tl4.exists():
        raise FileNotFoundError(f"{tl4}: build it with `make .venv-tl4/.installed`")
    exes = {"tl3": str(Path(sys.executable).with_name("interp-causal")), "tl4": str(tl4)}
    seconds: dict[str, list[float]] = {"tl3": [], "tl4": []}
    for _ in range(repeats):
        for line, exe in exes.items():
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run([exe, "demo", "--quiet", "--out", f"{tmp}/demo"], check=True, capture_output=True,
                                     text=True).stdout
            seconds[line].append(float(re.search(r"\(([\d.]+) s training", out).group(1)))
    return row("demo_train_s_tl4", statistics.median(seconds["tl4"]), "s", "the same demo under TransformerLens 3.9",
               statistics.median(seconds["tl3"]), "time")


SEQUENTIAL = """
import sys, tempfile
from interp_causal.probing import default_callback
from interp_causal.tasks import CausalGraph, InContextTask
from interp_causal.training import get_recipe, make_config, train_run
task = InContextTask(CausalGraph.chain(20), 10, 0.1)
with tempfile.TemporaryDirectory() as tmp:
    for seed in range(int(sys.argv[1])):
        train_run(make_config(task, "paper", get_recipe("fast"), seed), f"{tmp}/seed-{seed}",
                  callbacks=default_callback, progress=False)
"""


def bench_sweep(trials: int, repeats: int) -> list[dict]:
    """``interp-causal sweep`` of ``trials`` seeds of the fast recipe (1000 steps, probed), each a
    fresh process, against the same runs one after another: in one process (torch's threads: all
    cores), and as one ``interp-causal train`` command each (what a shell loop does today). Also
    what Ray's start and stop cost: ``ray.init`` on this machine, a no-op task per CPU, shutdown."""
    exe = str(Path(sys.executable).with_name("interp-causal"))

    def sweep():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([exe, "sweep", "--grid", f"seed=0-{trials - 1}", "--grid", "recipe=fast", "--quiet",
                            "--out", f"{tmp}/sweep"], check=True, capture_output=True)

    def one_process():
        subprocess.run([sys.executable, "-W", "ignore", "-c", SEQUENTIAL, str(trials)], check=True, capture_output=True)

    def commands():
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(trials):
                subprocess.run([exe, "train", "--recipe", "fast", "--seed", str(seed), "--quiet", "--out",
                                f"{tmp}/seed-{seed}"], check=True, capture_output=True)

    code = ("import logging, os, ray\nray.init(include_dashboard=False, logging_level=logging.ERROR)\n"
            "def pid():\n    return os.getpid()\n"
            "f = ray.remote(num_cpus=1)(pid)\nray.get([f.remote() for _ in range(os.cpu_count())])\nray.shutdown()\n")

    def ray_start():
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)

    def ray_import():
        subprocess.run([sys.executable, "-c", "import ray"], check=True, capture_output=True)

    ours, seq, cli = [], [], []
    for _ in range(repeats):  # interleaved: the machine's load drifts
        ours.append(median_time(sweep, 1, warmup=0))
        seq.append(median_time(one_process, 1, warmup=0))
        cli.append(median_time(commands, 1, warmup=0))
    name = f"sweep_{trials}x1000_fast_wall_s"
    ours_m = statistics.median(ours)
    return [
        row(name, ours_m, "s", f"the same {trials} runs one after another in one process", statistics.median(seq), "time"),
        row(name + "_vs_train_cli", ours_m, "s", f"{trials} interp-causal train commands one after another",
            statistics.median(cli), "time"),
        row("ray_start_stop_s", median_time(ray_start, repeats, warmup=0), "s",
            "python -c 'import ray'", median_time(ray_import, repeats, warmup=0), "overhead"),
    ]


def table(rows: list[dict]) -> str:
    """The rows as an aligned text table (blank where a row has no speedup or overhead)."""
    fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
    header = f"{'name':<34}{'value':>11} {'unit':<6}{'baseline':>11}  {'speedup':>8} {'overhead':>9}  baseline"
    lines = [header, "-" * len(header)]
    for x in rows:
        lines.append(f"{x['name']:<34}{x['value']:>11.4g} {x['unit']:<6}{x['baseline_value']:>11.4g}  "
                     f"{fmt(x['speedup'], '>7.3g') + 'x' if x['speedup'] is not None else '':>8} "
                     f"{fmt(x['overhead'], '>+9.1%')}  {x['baseline']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not for reporting)")
    parser.add_argument("--only", nargs="*", default=None, help="run only rows whose name contains one of these")
    parser.add_argument("--out", default=str(HERE / "results.json"), help="where to write the rows")
    args = parser.parse_args(argv)
    r = 3 if args.quick else 15
    chain = InContextTask(CausalGraph.chain(20), 10, 0.1)
    two_parent = InContextTask(CausalGraph.two_parent(32), 5, 0.1)
    tree = InContextTask(CausalGraph.random_tree(20, torch.Generator().manual_seed(0)), 10, 0.1)
    # Fig. 9's task: S = 3, a random tree (v2)
    trees_s3 = InContextTask(CausalGraph.random_tree(20, torch.Generator().manual_seed(0), version=2), 3, 0.1)
    jobs: list[tuple[str, Callable[[], dict]]] = [
        ("sampler_chain_seq_per_s", lambda: bench_sampler("sampler_chain_seq_per_s", chain, 2**14, r)),
        ("sampler_two_parent_seq_per_s", lambda: bench_sampler("sampler_two_parent_seq_per_s", two_parent, 2**14, r)),
        ("sampler_random_tree_seq_per_s", lambda: bench_sampler("sampler_random_tree_seq_per_s", tree, 2**14, r)),
        ("sampler_in_c_chain_seq_per_s", lambda: bench_sampler_in_c("sampler_in_c_chain_seq_per_s", chain, 2**14, r)),
        ("sampler_in_c_two_parent_seq_per_s", lambda: bench_sampler_in_c("sampler_in_c_two_parent_seq_per_s",
                                                                          two_parent, 2**14, r)),
        ("sampler_in_c_trees_s3_seq_per_s", lambda: bench_sampler_in_c("sampler_in_c_trees_s3_seq_per_s", trees_s3,
                                                                       2**14, r)),
        ("paper_step_ms_h11", lambda: bench_paper_step("paper_step_ms_h11", chain, (1, 1), "paper-sgd", 2 * r)),
        ("paper_step_ms_h21", lambda: bench_paper_step("paper_step_ms_h21", two_parent, (2, 1), "paper-adamw", 2 * r)),
        ("paper_step_ms_h11_hooked_forward", lambda: bench_hooked_dense_step(chain, r)),
        ("kernel_step_ms_chain", lambda: bench_kernel_step("kernel_step_ms_chain", chain, (1, 1), 1, r)),
        ("kernel_step_ms_two_parent", lambda: bench_kernel_step("kernel_step_ms_two_parent", two_parent, (2, 1), 1, r)),
        ("kernel_step_ms_trees_s3_k20", lambda: bench_kernel_step("kernel_step_ms_trees_s3_k20", trees_s3, (1, 1), 20,
                                                                  1 if args.quick else 5)),
        ("layer1_tables_step_ms_trees_s3", lambda: bench_layer1_tables("layer1_tables_step_ms_trees_s3", trees_s3, (1, 1),
                                                                       "paper-trees", r)),
        ("layer1_tables_step_ms_h21", lambda: bench_layer1_tables("layer1_tables_step_ms_h21", two_parent, (2, 1),
                                                                  "paper-adamw", r)),
        ("all_in_step_ms_chain_paper", lambda: bench_all_in_step("all_in_step_ms_chain_paper", chain, (1, 1),
                                                                 "paper-sgd", 2048 if args.quick else 3072, 1 if args.quick else 3)),
        ("all_in_step_ms_multi_parent_paper", lambda: bench_all_in_step("all_in_step_ms_multi_parent_paper", two_parent,
                                                                        (2, 1), "paper-adamw", 1024 if args.quick else 1536,
                                                                        1 if args.quick else 3)),
        ("stacked_trees_step_ms_k20", lambda: bench_stacked_trees(20, 50 if args.quick else 200, 1 if args.quick else 3)),
        ("stacked_trees_step_ms_k20_processes", lambda: bench_stacked_trees_processes(20, 150 if args.quick else 400,
                                                                                      1 if args.quick else 3)),
        ("standard_attn_only_step_ms", lambda: bench_standard_step(chain, r)),
        ("standard_3x4_d64_step_ms", lambda: bench_standard_multilayer_step(chain, r)),
        ("standard_mlp_step_ms_last_position", lambda: bench_last_position_step(chain, r)),
        ("probe_overhead", lambda: bench_probe_overhead(1 if args.quick else 7, 100 if args.quick else 300)),
        ("suite_vs_detect_head_ms", lambda: bench_suite_vs_detect_head(256, r)),
        ("gpt2_small", lambda: bench_gpt2_small(1 if args.quick else 3)),
        ("demo_wall_s", lambda: bench_demo(1 if args.quick else 3)),
        ("demo_train_s_tl4", lambda: bench_demo_tl4(1 if args.quick else 5)),
        ("sweep_8x1000_fast_wall_s", lambda: bench_sweep(8, 1 if args.quick else 3)),
    ]
    if args.only:
        jobs = [(n, f) for n, f in jobs if any(o in n for o in args.only)]
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    rows = []
    for name, job in jobs:
        print(f"  running {name} ...", file=sys.stderr, flush=True)
        done = job()
        rows += done if isinstance(done, list) else [done]
    print(table(rows))
    load = os.getloadavg()
    print(f"load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; speedup: times faster than the "
          f"baseline; overhead: extra time over the baseline")
    tmp = Path(args.out).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
