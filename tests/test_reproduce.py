"""``interp-causal reproduce`` and ``report``: every experiment at a tiny size writes its files and a
table of the right shape; the paper-size checks of the issue run behind ``-m slow``."""

from __future__ import annotations

import json
import math

import pytest

from interp_causal.cli import main
from interp_causal.experiments import EXPERIMENTS, reproduce

PNG = b"\x89PNG\r\n\x1a\n"


def _assert_figures(out, names):
    assert names, "no figures"
    for name in names:
        path = out / "figures" / name
        assert path.read_bytes()[:8] == PNG, name
        assert path.stat().st_size > 5000, f"{name} looks empty"


@pytest.mark.parametrize("name", sorted(set(EXPERIMENTS) - {"interventions"}))  # that one: its own test below
def test_every_experiment_writes_its_reproduction_report_and_figures(tmp_path, name):
    out = tmp_path / name
    _check_reproduction(out, name, reproduce(name, "tiny", out, progress=False))


def _check_reproduction(out, name, summary):
    on_disk = json.loads((out / "reproduction.json").read_text())
    if (out / "checkpoint.pt").exists():  # a training run keeps its own summary, in the run's one schema
        run_summary = json.loads((out / "summary.json").read_text())
        assert "rows" not in run_summary and run_summary["steps"] > 0 and "final_test_loss" in run_summary
    assert on_disk["experiment"] == name and on_disk["profile"] == "tiny" and on_disk["wall_s"] > 0
    assert len(on_disk["rows"]) == len(summary["rows"]) >= 2
    for row in on_disk["rows"]:
        assert set(row) == {"metric", "ours", "paper", "gap", "note"}
        if row["ours"] is not None and row["paper"] is not None:
            assert math.isfinite(row["ours"]) and row["gap"] == pytest.approx(row["ours"] - row["paper"])
    report = (out / "report.md").read_text()
    assert report.startswith(f"# {name} (tiny profile") and "| metric | ours | paper | gap | note |" in report
    figures = summary["numbers"]["figures"]
    _assert_figures(out, figures)
    for fig in figures:
        assert f"figures/{fig}" in report


def test_report_command_renders_any_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "attn-only", "--steps", "16", "--batch-size", "32", "--eval-every", "8",
                 "--seq-len", "8", "--vocab", "4", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    assert "report.md" in capsys.readouterr().out
    _assert_figures(run, ["graph_attention.png", "training.png"])  # a standard model has no A blocks
    assert not (run / "figures" / "blocks.png").exists()
    assert "final test loss" in (run / "report.md").read_text()


def test_report_command_on_a_reproduction_keeps_the_comparison_with_the_paper(tmp_path, capsys):
    out = tmp_path / "chain"
    summary = reproduce("chain", "tiny", out, progress=False)
    first = (out / "report.md").read_text()
    assert main(["report", str(out)]) == 0
    again = (out / "report.md").read_text()
    for text in (first, again):
        assert text.count("\n# ") + text.startswith("# ") == 1, "one title"
        assert text.count("| metric | ours | paper | gap | note |") == 1
        comparison, _, run_part = text.partition("\n## ")
        for row in summary["rows"]:
            assert comparison.count(f"| {row['metric']} |") == 1, row["metric"]
        assert "| final test loss |" in run_part and "figures/training.png" in run_part
    # the figures were drawn again from the same checkpoint and probe batch: same report
    assert again == first


def test_report_command_on_a_reproduction_without_a_checkpoint_says_what_to_run(tmp_path, capsys):
    out = tmp_path / "gradient"
    reproduce("gradient", "tiny", out, progress=False)
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "run_dir" in err and "no checkpoint.pt" in err and "interp-causal reproduce" in err


@pytest.mark.parametrize("kwargs, named", [
    (dict(name="nope"), "experiment"),
    (dict(name="chain", profile="huge"), "profile"),
    (dict(name="standard", graph="icl"), "graph"),
    (dict(name="chain", graph="two-parent"), "graph"),
])
def test_bad_arguments_are_refused_naming_them(tmp_path, kwargs, named):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=named):
        reproduce(name, out=tmp_path / "x", **kwargs)


def test_unknown_experiment_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "fig-12"])
    assert "experiment" in capsys.readouterr().err


# ---- the checks at full size: `make reproduce-tests` -------------------------------------
def _rows(summary):
    return {r["metric"]: r for r in summary["rows"]}


@pytest.mark.slow
def test_chain_recovers_the_graph_and_reaches_bayes(tmp_path):
    s = reproduce("chain", "paper", tmp_path / "chain", progress=False)
    rows = _rows(s)
    assert rows["row-argmax of softmax(A(1)) on the parent"]["ours"] == 1.0
    assert rows["gap to Bayes (%)"]["ours"] < 3.0


@pytest.mark.slow
def test_gradient_points_at_the_parent_for_every_graph(tmp_path):
    s = reproduce("gradient", "paper", tmp_path / "gradient", progress=False)
    for graph in ("chain", "icl", "random"):
        assert s["numbers"][graph]["argmax_on_parent"] == 1.0, graph


@pytest.mark.slow
def test_standard_transformer_reaches_bayes(tmp_path):
    s = reproduce("standard", "paper", tmp_path / "standard", progress=False)
    assert _rows(s)["gap to Bayes (%)"]["ours"] < 2.0


@pytest.mark.slow
def test_multi_parent_heads_split_the_parents_and_loss_reaches_bayes(tmp_path):
    s = reproduce("multi-parent", "paper", tmp_path / "multi", progress=False)
    rows = _rows(s)
    assert rows["final gap to Bayes"]["ours"] < 0.03
    assert rows["drop step (loss below one-parent/Bayes midpoint)"]["ours"] is not None
    heads = s["numbers"]["position_attention"]
    slots = [max((0, 1), key=lambda r: h[f"mass_parent{r}"]) for h in heads]
    assert sorted(slots) == [0, 1]
    assert all(h[f"mass_parent{r}"] >= 0.8 for h, r in zip(heads, slots))


@pytest.mark.slow
def test_many_trees_attention_on_the_true_parent(tmp_path):
    s = reproduce("many-trees", "paper", tmp_path / "trees", progress=False)
    assert abs(_rows(s)["mean attention on the true parent"]["ours"] - 0.837) <= 0.05


def test_the_interventions_experiment_runs_each_intervention_and_tabulates_every_run(tmp_path):
    from interp_causal.experiments import INTERVENTION_RUNS, STAGEWISE

    out = tmp_path / "interventions"
    summary = reproduce("interventions", "tiny", out, progress=False)
    _check_reproduction(out, "interventions", summary)
    runs = summary["numbers"]["runs"]
    assert {g: set(r) for g, r in runs.items()} == {
        "chain": set(INTERVENTION_RUNS["chain"]) | {STAGEWISE}, "two-parent": set(INTERVENTION_RUNS["two-parent"])}
    n_runs = sum(len(r) for r in runs.values())
    assert len(summary["rows"]) == 3 * n_runs + 1  # gap, plateau, formation per run; the reduced model's floor
    for graph, by_label in INTERVENTION_RUNS.items():
        for label, spec in by_label.items():
            run_dir = next(p for p in (out / graph).iterdir()
                           if json.loads((p / "config.json").read_text()).get("interventions", {}) == spec
                           and json.loads((p / "config.json").read_text())["model"]["preset"] == "paper")
            assert (run_dir / "summary.json").is_file() and (run_dir / "figures" / "training.png").is_file()
    stage = json.loads((out / "chain" / "stage-wise" / "config.json").read_text())
    assert stage["model"]["preset"] == "paper-reduced" and stage["recipe"]["stage_split"] == 12
    clamped = runs["chain"]["layer 1 clamped to the parents"]["formed"]
    assert clamped["parent_attention"] == "imposed (clamped to parents)"
    assert runs["chain"]["layer-1 head ablated"]["interventions"] == ["ablate L0H0 (zero)"]
    assert runs["two-parent"]["layer 1 clamped to the parents"]["interventions"] == [
        "clamp L0H0 to parents:0", "clamp L0H1 to parents:1"]
    _assert_figures(out, ["interventions_chain.png", "interventions_two-parent.png"])
