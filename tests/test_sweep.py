"""Sweeps: the grid, the trials on Ray (one node, two nodes, a worker killed), sweep.csv and errors.

References are independent of the sweep: each trial's own summary.json, `interp-causal train` with
the same options, an unbroken sweep, the grid's product counted by hand.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from interp_causal.cli import main
from interp_causal.sweep import Grid, SweepDir
from interp_causal.training import RunDir

ray = pytest.importorskip("ray", reason="sweeps need the sweep extra (ray)")

TINY = ["--grid", "steps=60", "--grid", "eval-every=20", "--grid", "batch-size=64"]
FOUR = ["--grid", "seed=0-1", "--grid", "vocab=4,6", *TINY, "--cpus-per-trial", "1", "--quiet"]
TIMING = {"seconds", "wall_s"}  # what may differ between two runs of the same config


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _same_numbers(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}


def _mtimes(root: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    """A sweep of 2 seeds x 2 vocabularies, 60 steps each, on the embedded cluster."""
    out = tmp_path_factory.mktemp("sweep") / "four"
    assert main(["sweep", *FOUR, "--out", str(out)]) == 0
    return out


# ---- the grid ---------------------------------------------------------------------------------
def test_the_grid_is_the_product_of_its_values_in_train_types():
    g = Grid.parse(["seed=0-2", "vocab=5,10", "heads=1,1;2,1", "lr=1e-2", "ablate=none;0.0+1.0", "mlp=false"])
    assert len(g) == 3 * 2 * 2 * 2 and len(g.trials()) == 24
    assert g.values["seed"] == [0, 1, 2] and g.values["lr"] == [0.01] and g.values["heads"] == [(1, 1), (2, 1)]
    assert g.values["ablate"] == [[], ["0.0", "1.0"]] and g.values["mlp"] == [False]
    assert g.swept == ["seed", "vocab", "heads", "ablate"]
    assert g.trials()[1] == {"seed": 0, "vocab": 5, "heads": (1, 1), "lr": 0.01, "ablate": ["0.0", "1.0"], "mlp": False}
    assert g.name(g.trials()[-1]) == "seed-2_vocab-10_heads-2-1_ablate-0.0-1.0"


def test_a_toml_grid_equals_the_same_grid_on_the_command_line(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('[grid]\nseed = [0, 1, 2]\nseq-len = 12\ngraph = ["chain", "random"]\n'
                    'heads = [[1, 1], [2, 1]]\nclamp = [[], ["0.0=parents"]]\n')
    assert Grid.from_toml(path).to_dict() == Grid.parse(
        ["seed=0,1,2", "seq_len=12", "graph=chain,random", "heads=1,1;2,1", "clamp=none;0.0=parents"]).to_dict()


@pytest.mark.parametrize("grid, needle", [
    (["--grid", "bogus=1,2"], "unknown key 'bogus'"),
    (["--grid", "seed="], "seed has no values"),
    (["--grid", "lr=fast"], "lr='fast': expected a float"),
    (["--grid", "vocab=3,x"], "vocab='x'"),
    (["--grid", "model=gpt5"], "model='gpt5': expected one of"),
    (["--grid", "graph=lattice"], "lattice"),
    (["--grid", "seed=0-299"], "300 trials, more than --max-trials 256; pass --yes"),
    (["--grid", "seed=0-9", "--max-trials", "8"], "10 trials, more than --max-trials 8"),
])
def test_bad_grids_are_one_line_errors_and_write_nothing(tmp_path, capsys, grid, needle):
    out = tmp_path / "s"
    assert main(["sweep", *grid, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_without_ray_the_sweep_names_the_extra_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "s"
    assert main(["sweep", "--grid", "seed=0-1", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'interp-causal[sweep]'" in err
    assert not out.exists()


# ---- one node ---------------------------------------------------------------------------------
def test_four_trials_write_four_runs_and_a_csv_equal_to_their_summaries(four):
    rows = _csv(four / "sweep.csv")
    trials = sorted(p.name for p in (four / "trials").iterdir())
    assert trials == sorted(f"seed-{s}_vocab-{v}" for s in (0, 1) for v in (4, 6)) == sorted(r["trial"] for r in rows)
    for row in rows:
        run = RunDir(four / "trials" / row["trial"])
        s = run.read_summary()
        config = run.read_config()
        assert (int(row["seed"]), int(row["vocab"])) == (config["seed"], config["task"]["vocab_size"])
        assert row["status"] == "done" and int(row["steps"]) == s["steps"] == 60
        for key in ("final_test_loss", "bayes_loss", "gap", "gap_pct"):
            assert float(row[key]) == s[key], key  # full precision: the same float
        for name, m in s["mechanisms"].items():
            if isinstance(m, dict):
                assert float(row[f"{name}_score"]) == m["value"]
                assert row[f"{name}_step"] == ("" if m["threshold_step"] is None else str(m["threshold_step"]))
        assert row["node"] == run.read_trial()["node"] and len(row["node"]) > 8
        assert float(row["train_s"]) == s["seconds"] and run.read_trial()["threads"] == 1
    # one figure per swept option other than the seed, which each point averages over
    assert {p.name for p in SweepDir(four).figures.glob("*.png")} == {"sweep_vocab.png"}


def test_the_stacked_engine_trains_the_runs_of_the_ray_sweep_in_one_process(four, tmp_path):
    """--engine stacked: the two seeds of each vocabulary step together; every run as Ray's (to 1e-5)."""
    out = tmp_path / "stacked"
    assert main(["sweep", *FOUR, "--engine", "stacked", "--out", str(out)]) == 0
    rows = _csv(out / "sweep.csv")
    assert sorted(r["trial"] for r in rows) == sorted(r["trial"] for r in _csv(four / "sweep.csv"))
    for row in rows:
        got, want = RunDir(out / "trials" / row["trial"]), RunDir(four / "trials" / row["trial"])
        assert got.read_trial()["stacked"] == 2 and got.read_trial()["threads"] == 1
        a, b = got.read_summary(), want.read_summary()
        for key in ("final_test_loss", "bayes_loss", "gap"):
            assert abs(a[key] - b[key]) <= 1e-5, key
        assert a["mechanisms"].keys() == b["mechanisms"].keys()
        weights_a, weights_b = got.load_checkpoint()["model"], want.load_checkpoint()["model"]
        assert all(torch.allclose(v.double(), weights_b[k].double(), rtol=0, atol=1e-5) for k, v in weights_a.items())
        assert len(got.read_probes()) == len(want.read_probes()) > 0  # probes ran on schedule in both


def test_the_stacked_engine_trains_what_it_cannot_stack_one_by_one(tmp_path):
    """A standard model and a paper model of another layout: each trained alone, as train_run trains it."""
    from interp_causal.sweep.trials import Trial, run_trials
    from interp_causal.tasks import CausalGraph, InContextTask
    from interp_causal.training import get_recipe, make_config, train_run

    small = dict(steps=20, batch_size=32, eval_every=10, test_size=64)
    task = InContextTask(CausalGraph.chain(8), 4)
    configs = {"paper": make_config(task, "paper", get_recipe("fast").with_overrides(**small), 0),
               "attn-only": make_config(task, "attn-only", get_recipe("standard").with_overrides(**small), 1)}
    trials = [Trial(name, config, tmp_path / "stacked" / name) for name, config in configs.items()]
    results = run_trials(trials, probes=False, engine="stacked", progress=False)
    for name, config in configs.items():
        assert results[name]["stacked"] == 1
        want = train_run(config, tmp_path / "alone" / name, progress=False)
        assert abs(results[name]["summary"]["final_test_loss"] - want["final_test_loss"]) <= 1e-5, name


def test_the_stacked_engine_stacks_at_most_max_stack_models(tmp_path, monkeypatch):
    from interp_causal.sweep.trials import Trial, run_trials
    from interp_causal.tasks import CausalGraph, InContextTask
    from interp_causal.training import get_recipe, make_config, stacked

    recipe = get_recipe("fast").with_overrides(steps=4, batch_size=16, eval_every=2, test_size=32)
    task = InContextTask(CausalGraph.chain(6), 3)
    monkeypatch.setattr(stacked, "MAX_STACK", 2)
    trials = [Trial(f"seed-{k}", make_config(task, "paper", recipe, k), tmp_path / f"seed-{k}") for k in range(5)]
    results = run_trials(trials, probes=False, engine="stacked", progress=False)
    assert sorted(r["stacked"] for r in results.values()) == [1, 2, 2, 2, 2]


def test_a_trial_equals_train_with_the_same_options(four, tmp_path):
    out = tmp_path / "run"
    # the sweep's trials ran with one thread each; so does this (the suite runs with one)
    assert main(["train", "--seed", "1", "--vocab", "6", "--steps", "60", "--eval-every", "20", "--batch-size", "64",
                 "--threads", "1", "--quiet", "--out", str(out)]) == 0
    trial = RunDir(four / "trials" / "seed-1_vocab-6")
    assert RunDir(out).read_config() == trial.read_config()
    assert _same_numbers(RunDir(out).read_summary(), trial.read_summary())
    drop = {"elapsed_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in RunDir(out).read_metrics()] == \
        [{k: v for k, v in r.items() if k not in drop} for r in trial.read_metrics()]
    assert RunDir(out).read_probes() == trial.read_probes()


def test_a_finished_sweep_started_again_trains_nothing_and_says_so(four, capsys):
    before = _mtimes(four / "trials")
    assert main(["sweep", *FOUR, "--out", str(four)]) == 0
    said = capsys.readouterr().out
    assert "all 4 trials" in said and "nothing to train" in said
    assert _mtimes(four / "trials") == before


def test_report_renders_the_sweep_again(four, capsys):
    table = (four / "sweep.csv").read_text()
    (four / "sweep.csv").unlink()
    for png in SweepDir(four).figures.glob("*.png"):
        png.unlink()
    assert main(["report", str(four)]) == 0
    assert (four / "sweep.csv").read_text() == table
    assert (SweepDir(four).figures / "sweep_vocab.png").is_file() and (four / "report.md").is_file()


def test_another_grid_in_the_same_directory_is_refused(four, capsys):
    before = _mtimes(four)
    assert main(["sweep", "--grid", "seed=0-2", *TINY, "--out", str(four), "--quiet"]) == 2
    assert "holds another sweep" in capsys.readouterr().err
    assert _mtimes(four) == before


# ---- two nodes ---------------------------------------------------------------------------------
@pytest.mark.once
def test_two_nodes_run_the_trials_and_equal_the_one_node_sweep(four, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        assert main(["sweep", *FOUR, "--out", str(tmp_path / "two")]) == 0
    finally:
        ray.shutdown()
        cluster.shutdown()
    rows, ones = _csv(tmp_path / "two" / "sweep.csv"), {r["trial"]: r for r in _csv(four / "sweep.csv")}
    assert len({r["node"] for r in rows}) == 2
    for row in rows:
        drop = {"node", "train_s", "wall_s"}
        assert {k: v for k, v in row.items() if k not in drop} == {k: v for k, v in ones[row["trial"]].items()
                                                                   if k not in drop}


# ---- a worker killed ---------------------------------------------------------------------------
def _trial_workers() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::train_trial"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _step_reached(trials: Path) -> int:
    steps = [0]
    for metrics in trials.glob("*/metrics.jsonl"):
        if not (metrics.parent / "summary.json").exists() and (metrics.parent / "checkpoint.pt").exists():
            steps += [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.endswith("}")]
    return max(steps)


@pytest.mark.once
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc")
def test_a_worker_killed_mid_trial_is_retried_and_the_sweep_equals_an_unbroken_one(tmp_path):
    grid = ["--grid", "seed=0-1", "--grid", "vocab=5", "--grid", "steps=800", "--grid", "eval-every=25",
            "--grid", "batch-size=32", "--cpus-per-trial", "1", "--quiet"]
    cmd = [sys.executable, "-m", "interp_causal.cli", "sweep", *grid]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # an embedded cluster of its own
    assert subprocess.run([*cmd, "--out", str(tmp_path / "unbroken")], env=env, capture_output=True).returncode == 0
    broken = tmp_path / "broken"
    sweep = subprocess.Popen([*cmd, "--out", str(broken)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline and sweep.poll() is None:
        workers = _trial_workers()
        if workers and _step_reached(broken / "trials") >= 200:  # mid-trial, past a few checkpoints
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.05)
    out, err = sweep.communicate(timeout=300)
    assert killed is not None, "no trial was caught mid-way"
    assert sweep.returncode == 0, err.decode()
    assert any(RunDir(p).read_trial()["resumed"] for p in (broken / "trials").iterdir())
    for name in ("seed-0", "seed-1"):
        a, b = RunDir(tmp_path / "unbroken" / "trials" / name), RunDir(broken / "trials" / name)
        assert _same_numbers(a.read_summary(), b.read_summary())
        assert [r["test_loss"] for r in a.read_metrics()] == [r["test_loss"] for r in b.read_metrics()]
        assert a.read_probes() == b.read_probes()
        weights_a, weights_b = a.load_checkpoint()["model"], b.load_checkpoint()["model"]
        assert weights_a.keys() == weights_b.keys() and all(torch.equal(v, weights_b[k]) for k, v in weights_a.items())
    before = _mtimes(broken / "trials")
    again = subprocess.run([*cmd, "--out", str(broken)], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to train" in again.stdout
    assert _mtimes(broken / "trials") == before


# ---- reproduce many-trees through the same machinery ----------------------------------------------
def test_many_trees_trains_its_graphs_as_trials_with_the_numbers_of_one_by_one_runs(tmp_path):
    from interp_causal.experiments import TINY as TINY_PROFILE
    from interp_causal.experiments import reproduce
    from interp_causal.report import analysis
    from interp_causal.tasks import CausalGraph, InContextTask
    from interp_causal.training import get_recipe, load_run, make_config, train_run

    result = reproduce("many-trees", "tiny", tmp_path / "trees", progress=False)
    assert all(RunDir(tmp_path / "trees" / f"graph-{g:02d}").read_trial()["stacked"] == 2 for g in range(2))
    recipe = get_recipe("paper-trees").with_overrides(**TINY_PROFILE)
    for g, mass in enumerate(result["numbers"]["per_graph"]):  # the graphs one by one, each alone
        graph = CausalGraph.random_tree(20, torch.Generator().manual_seed(g), version=2)
        train_run(make_config(InContextTask(graph, 3, 0.1), "paper", recipe, g), tmp_path / f"one-{g}", progress=False)
        _, model, _, _ = load_run(tmp_path / f"one-{g}")
        assert abs(analysis.parent_scores(analysis.position_attention(model, 0), graph)[0]["mass"] - mass) <= 1e-5


def test_the_stacked_engine_splits_its_trials_over_processes_at_one_thread_each(tmp_path):
    """With torch at 2 threads and no cpus_per_trial, four stackable trials train as two stacks of
    two, in two other processes at one thread each, and end where one process stacking them at
    one thread ends (each model's computation does not depend on what it is stacked with)."""
    from interp_causal.sweep.trials import Trial, run_trials
    from interp_causal.tasks import CausalGraph, InContextTask
    from interp_causal.training import get_recipe, make_config

    recipe = get_recipe("fast").with_overrides(steps=12, batch_size=32, eval_every=6, test_size=64)
    task = InContextTask(CausalGraph.chain(8), 4)
    configs = {f"seed-{k}": make_config(task, "paper", recipe, k) for k in range(4)}

    def trials(where: str) -> list:
        return [Trial(name, config, tmp_path / where / name) for name, config in configs.items()]

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        split = run_trials(trials("split"), probes=False, engine="stacked", progress=False)
    finally:
        torch.set_num_threads(before)
    pids = {r["pid"] for r in split.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(r["threads"] == 1 and r["stacked"] == 2 for r in split.values())
    together = run_trials(trials("together"), probes=False, engine="stacked", progress=False, cpus_per_trial=1)
    assert all(r["pid"] == os.getpid() and r["stacked"] == 4 for r in together.values())
    for name in configs:
        a = RunDir(tmp_path / "split" / name).load_checkpoint()["model"]
        b = RunDir(tmp_path / "together" / name).load_checkpoint()["model"]
        assert all(torch.allclose(v, b[k], rtol=0, atol=1e-6) for k, v in a.items()), name
        assert split[name]["summary"]["final_test_loss"] == pytest.approx(together[name]["summary"]["final_test_loss"],
                                                                         abs=1e-6)
    w = [RunDir(tmp_path / "split" / n).load_checkpoint()["model"] for n in configs]  # keys differ by backend
    assert max(float((w[0][k].double() - w[1][k].double()).abs().max()) for k in w[0] if w[0][k].numel()) > 1e-3


def test_a_share_that_fails_in_its_process_reports_the_error_for_its_trials(tmp_path):
    from interp_causal.sweep.trials import Trial, run_trials
    from interp_causal.tasks import CausalGraph, InContextTask
    from interp_causal.training import get_recipe, make_config

    recipe = get_recipe("fast").with_overrides(steps=4, batch_size=16, eval_every=2, test_size=32)
    good = make_config(InContextTask(CausalGraph.chain(6), 3), "paper", recipe, 0)
    bad = json.loads(json.dumps(good))
    bad["task"]["vocab_size"] = 1
    trials = [Trial("good", good, tmp_path / "good"), Trial("bad", bad, tmp_path / "bad")]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = run_trials(trials, probes=False, engine="stacked", progress=False)
    finally:
        torch.set_num_threads(before)
    assert "vocab_size: expected an int >= 2" in results["bad"]["error"]
    assert results["good"]["summary"]["final_test_loss"] > 0 and results["good"]["threads"] == 1
