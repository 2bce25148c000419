"""Tests of the ``interp-causal`` command line: train, resume, argument errors, --help, light import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from interp_causal.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--steps", "20", "--batch-size", "32", "--seq-len", "8", "--vocab", "4", "--eval-every", "10", "--quiet", "--no-probes"]  # fmt: skip


def read_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def test_train_writes_a_run_and_resume_continues(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "summary.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["task"]["vocab_size"] == 4
    assert len(config["task"]["parents"]) == 8
    assert config["recipe"]["steps"] == 20 and config["recipe"]["batch_size"] == 32
    rows = read_rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 10, 20]
    for r in rows:
        assert {"step", "train_loss", "test_loss", "bayes_loss"} <= set(r)
    assert all(isinstance(r["train_loss"], float) for r in rows[1:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 20
    assert summary["final_test_loss"] == rows[-1]["test_loss"]
    printed = capsys.readouterr().out
    assert "Bayes loss" in printed

    assert main(["train", "--resume", "--steps", "40", "--out", str(out), "--quiet", "--no-probes"]) == 0
    rows = read_rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40]
    assert json.loads((out / "summary.json").read_text())["steps"] == 40
    assert json.loads((out / "config.json").read_text())["recipe"]["steps"] == 40


def test_random_graph_follows_the_seed_and_heads_survive_resume(tmp_path):
    import torch

    from interp_causal.tasks import CausalGraph

    out = tmp_path / "rand"
    assert main(["train", *TINY, "--graph", "random", "--seed", "3", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    want = CausalGraph.random_tree(8, torch.Generator().manual_seed(3)).parent_lists()
    assert config["task"]["parents"] == want
    assert config["seed"] == 3

    out2 = tmp_path / "two"
    assert main(["train", *TINY, "--graph", "two-parent", "--heads", "2,1", "--out", str(out2)]) == 0
    config = json.loads((out2 / "config.json").read_text())
    assert config["model"]["options"]["heads"] == [2, 1]
    assert config["task"]["target_parents"] == [3, 7]
    assert main(["train", "--resume", "--steps", "30", "--out", str(out2), "--quiet", "--no-probes"]) == 0
    assert [r["step"] for r in read_rows(out2 / "metrics.jsonl")] == [0, 10, 20, 30]
    assert "one_parent_loss" in read_rows(out2 / "metrics.jsonl")[-1]


def test_train_refuses_an_existing_run_without_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", *TINY, "--out", str(out)]) != 0
    assert "out" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--graph", "nonsense"], "graph"),
        (["--vocab", "1"], "vocab"),
        (["--seq-len", "2"], "seq_len"),
        (["--alpha", "-1"], "alpha"),
        (["--model", "attn-only", "--heads", "2,1"], "heads"),
    ],
)
def test_bad_values_exit_nonzero_naming_the_argument(tmp_path, capsys, extra, named):
    out = tmp_path / "run"
    code = main(["train", *TINY, "--out", str(out), *extra])
    assert code != 0
    err = capsys.readouterr().err
    assert named in err, err
    assert not (out / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--vocab", "0"], "--vocab"),
        (["--steps", "abc"], "--steps"),
        (["--model", "nonsense"], "--model"),
        (["--heads", "x"], "--heads"),
        (["--recipe", "nope"], "--recipe"),
    ],
)
def test_unparsable_arguments_exit_nonzero_naming_the_argument(tmp_path, capsys, extra, named):
    with pytest.raises(SystemExit) as exc:
        main(["train", *TINY, "--out", str(tmp_path / "run"), *extra])
    assert exc.value.code not in (0, None)
    assert named in capsys.readouterr().err


def test_resume_needs_out(capsys):
    assert main(["train", "--resume", "--quiet", "--no-probes"]) != 0
    assert "out" in capsys.readouterr().err


def test_resume_of_a_missing_run(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path / "none"), "--quiet", "--no-probes"]) != 0
    assert "out" in capsys.readouterr().err


def test_help_runs_in_a_subprocess(tmp_path):
    for args in (["--help"], ["train", "--help"]):
        res = subprocess.run(
            [sys.executable, "-m", "interp_causal.cli", *args],
            cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert "usage: interp-causal" in res.stdout
    assert "--graph" in res.stdout and "--resume" in res.stdout


def test_console_script_help(tmp_path):
    script = Path(sys.executable).parent / "interp-causal"
    if not script.exists():
        pytest.skip("the interp-causal console script is not installed in this environment")
    res = subprocess.run([str(script), "--help"], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "train" in res.stdout


def test_cli_module_imports_no_torch(tmp_path):
    code = (
        "import sys, interp_causal.cli as c; c.build_parser(); "
        "print(sorted(m for m in ('torch', 'transformer_lens') if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_probe_a_run_directory_with_the_full_suite_and_a_head_map(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["probe", str(out), "--batch-size", "64"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == 20 and printed["mechanisms"]["final_step"] is None  # one snapshot
    assert {"linear_copying", "behaviour"} <= {r["probe"] for r in printed["records"]}
    grid = printed["heads"]
    assert {"previous_token", "induction", "parent_attention", "graph_induction"} <= set(grid)
    assert len(grid["previous_token"]) == 2  # layers of the paper model
    assert (out / "figures" / "heads.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "probe_summary.json").read_text())["heads"] == grid
