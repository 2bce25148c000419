"""docs/results.md and the README's results table come from the reproductions' own JSON: the
paper's claims judged at their thresholds, collected, rendered, and kept in sync with the files
committed."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from interp_causal import results
from interp_causal.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _reproduction(experiment: str, profile: str, rows: dict, numbers: dict | None = None, wall: float = 12.5) -> dict:
    rep = {"experiment": experiment, "profile": profile, "wall_s": wall, "date": "2026-12-03 12:00 UTC",
           "machine": {"cores": 2, "torch_threads": 2, "torch": "2.13.0", "transformer_lens": "3.9.0",
                       "python": "3.11.7", "platform": "Linux"},
           "rows": [{"metric": m, "ours": v, "paper": p, "gap": None if v is None or p is None else v - p, "note": ""}
                    for m, (v, p) in rows.items()],
           "numbers": numbers or {}}
    rep["checks"] = results.check(experiment.split("-icl")[0], rep)
    return rep


CHAIN = {"row-argmax of softmax(A(1)) on the parent": (1.0, 1.0), "gap to Bayes (%)": (2.61, 0.0)}


@pytest.mark.parametrize("argmax, gap, passed", [(1.0, 2.61, True), (1.0, 3.2, False), (0.95, 1.0, False)])
def test_the_chain_checks_hold_at_the_papers_thresholds(argmax, gap, passed):
    rep = _reproduction("chain", "paper", {"row-argmax of softmax(A(1)) on the parent": (argmax, 1.0),
                                           "gap to Bayes (%)": (gap, 0.0)})
    assert [c["passed"] for c in rep["checks"]] == [argmax == 1.0, gap < 3.0]
    assert all(c["passed"] for c in rep["checks"]) is passed


def test_two_heads_on_the_same_parent_fail_the_multi_parent_check():
    same = [{"mass_parent0": 0.9, "mass_parent1": 0.05}, {"mass_parent0": 0.85, "mass_parent1": 0.1}]
    split = [{"mass_parent0": 0.9, "mass_parent1": 0.05}, {"mass_parent0": 0.1, "mass_parent1": 0.82}]
    rows = {"final gap to Bayes": (0.01, 0.015)}
    bad = _reproduction("multi-parent", "paper", rows, {"position_attention": same})["checks"]
    good = _reproduction("multi-parent", "paper", rows, {"position_attention": split})["checks"]
    assert bad[0]["value"] == 0.0 and bad[0]["passed"] is False
    assert good[0]["value"] == pytest.approx(0.82) and good[0]["passed"] is True
    # the quick profile does not judge the final gap (its 5000 steps end before the paper's loss)
    quick = _reproduction("multi-parent", "quick", rows, {"position_attention": split})["checks"]
    assert [c["rule"] for c in quick] == ["heads on different parents, each >= 0.6"]


def test_a_metric_not_measured_is_neither_passed_nor_failed():
    rep = _reproduction("chain", "quick", {"gap to Bayes (%)": (2.0, 0.0)})
    assert [c["passed"] for c in rep["checks"]] == [None, True]


def _write(runs: Path, name: str, rep: dict) -> None:
    (runs / name).mkdir(parents=True)
    (runs / name / "reproduction.json").write_text(json.dumps(rep))


def test_results_are_collected_rendered_and_the_readme_table_replaced(tmp_path):
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    _write(runs, "chain-paper", _reproduction("chain", "paper", CHAIN, wall=1440.0))
    _write(runs, "chain-quick", _reproduction("chain", "quick", CHAIN, wall=30.0))
    _write(runs, "gradient-tiny", {**_reproduction("gradient", "tiny", {}), "checks": []})
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{results.README_BEGIN}\nold table\n{results.README_END}\n\nafter\n")
    assert main(["results", str(runs), "--docs", str(docs), "--readme", str(readme)]) == 0
    stored = json.loads((docs / "results.json").read_text())
    assert sorted(stored) == ["chain paper", "chain quick"]  # the tiny profile is not a result
    md = (docs / "results.md").read_text()
    assert md.count("## chain, ") == 2 and md.index("## chain, quick") < md.index("## chain, paper")
    assert "24.0 min on 2 cores" in md and "| 2.61 |" in md and "torch 2.13.0, TransformerLens 3.9.0" in md
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "old table" not in text
    line = next(x for x in text.splitlines() if x.startswith("| `reproduce chain`"))
    assert "| 30 s | 24.0 min |" in line and "paper: passed" in line
    # again with nothing new: the same bytes; a new quick run replaces only its own entry
    before = {p.name: p.read_bytes() for p in (docs / "results.json", docs / "results.md", readme)}
    assert main(["results", str(runs), "--docs", str(docs), "--readme", str(readme)]) == 0
    assert before == {p.name: p.read_bytes() for p in (docs / "results.json", docs / "results.md", readme)}
    other = tmp_path / "other"
    _write(other, "chain-quick", _reproduction("chain", "quick", CHAIN, wall=31.0))
    assert main(["results", str(other), "--docs", str(docs), "--readme", str(readme)]) == 0
    stored = json.loads((docs / "results.json").read_text())
    assert stored["chain quick"]["wall_s"] == 31.0 and stored["chain paper"]["wall_s"] == 1440.0


def test_results_without_any_reproduction_say_what_to_run(tmp_path, capsys):
    assert main(["results", str(tmp_path / "nope"), "--docs", str(tmp_path / "docs"),
                 "--readme", str(tmp_path / "README.md")]) == 2
    assert "interp-causal reproduce" in capsys.readouterr().err
    assert not (tmp_path / "docs").exists()


def test_a_readme_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="readme"):
        results.replace_readme_table("# no markers\n", "table")


def test_the_committed_results_and_readme_table_are_rendered_from_results_json():
    """Nobody edits docs/results.md or the README's table by hand: both equal what
    `interp-causal results` renders from docs/results.json."""
    stored = json.loads((ROOT / "docs" / "results.json").read_text())
    assert (ROOT / "docs" / "results.md").read_text() == results.render_md(stored)
    readme = (ROOT / "README.md").read_text()
    assert results.render_readme_table(stored) in readme


def test_a_reproduction_names_the_cpu_it_ran_on(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n"
                    "processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n")
    assert results.cpu_model(info) == "AMD EPYC 7B13"
    (tmp_path / "arm").write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")  # no model name line (as on some ARM)
    assert results.cpu_model(tmp_path / "arm") in (None, platform.processor() or None)
    assert results.cpu_model(tmp_path / "missing") in (None, platform.processor() or None)
    named, unnamed = _reproduction("chain", "paper", CHAIN, wall=1440.0), _reproduction("chain", "quick", CHAIN)
    named["machine"]["cpu"] = "AMD EPYC 7B13"
    md = results.render_md(results.collect(_runs(tmp_path, {"chain-paper": named, "chain-quick": unnamed})))
    assert "24.0 min on 2 cores (AMD EPYC 7B13, 2 torch threads)" in md  # older entries have no cpu
    assert "12 s on 2 cores (2 torch threads)" in md


def _runs(tmp_path: Path, reps: dict) -> Path:
    runs = tmp_path / "runs"
    for name, rep in reps.items():
        _write(runs, name, rep)
    return runs
