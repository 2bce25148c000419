"""Standard multi-layer models from the command line: sizes, the recipes that fit them, the guard
that stops a diverging run, and the bad input it refuses."""

from __future__ import annotations

import json

import pytest
import torch

from interp_causal.cli import main

TINY = ["--vocab", "4", "--seq-len", "8", "--steps", "20", "--batch-size", "32", "--eval-every", "10", "--quiet",
        "--no-probes"]


def test_any_depth_and_width_from_the_command_line_rebuilds_exactly(tmp_path):
    from interp_causal.training import load_run

    out = tmp_path / "run"
    assert main(["train", "--model", "attn-only", "--layers", "3", "--heads", "4", "--d-model", "32", *TINY,
                 "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["options"] == {"n_layers": 3, "n_heads": 4, "d_model": 32, "mlp": False,
                                          "layernorm": False, "positional": "standard", "seed": 0}
    assert config["recipe"]["lr"] == 1e-2  # the standard presets' default recipe, not fast's 5e-2
    _, model, _, _ = load_run(out)
    assert (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model, model.cfg.d_head) == (3, 4, 32, 8)
    assert model.cfg.attn_only and model.cfg.normalization_type is None
    # resuming rebuilds the same model from config.json and trains on
    assert main(["train", "--resume", "--steps", "30", "--out", str(out), "--quiet", "--no-probes"]) == 0
    assert main(["train", "--resume", "--steps", "40", "--layers", "2", "--out", str(out), "--quiet"]) == 2


@pytest.mark.parametrize("extra, cfg", [
    (["--model", "mlp", "--no-mlp"], {"attn_only": True}),
    (["--model", "attn-only", "--mlp", "--layernorm"], {"attn_only": False, "normalization_type": "LN"}),
    (["--model", "attn-only", "--positional", "rotary", "--heads", "2"], {"positional_embedding_type": "rotary", "n_heads": 2}),
    (["--model", "paper", "--layers", "3"], {"n_layers": 3}),
])
def test_overrides_reach_the_model(tmp_path, extra, cfg):
    from interp_causal.training import load_run

    out = tmp_path / "run"
    assert main(["train", *extra, *TINY, "--out", str(out)]) == 0
    _, model, _, _ = load_run(out)
    for key, value in cfg.items():
        assert getattr(model.cfg, key) == value, key


@pytest.mark.parametrize("extra, named", [
    (["--layers", "0"], "layers"),
    (["--model", "attn-only", "--heads", "3", "--d-model", "64"], "d_model"),
    (["--model", "paper-reduced", "--heads", "2"], "heads"),
    (["--model", "rotary", "--heads", "2", "--d-model", "6"], "rotary"),
    (["--model", "paper", "--d-model", "64"], "--d-model"),
    (["--model", "attn-only", "--heads", "2,1"], "heads"),
])
def test_bad_model_options_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, extra, named):
    out = tmp_path / "run"
    assert main(["train", *extra, *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err
    assert not out.exists()


def test_the_guard_stops_a_diverging_run_keeps_its_last_good_checkpoint_and_a_sane_lr_resumes_it(tmp_path, capsys):
    from interp_causal.training import load_checkpoint

    out = tmp_path / "run"
    argv = ["train", "--model", "attn-only", "--layers", "2", "--heads", "2", "--vocab", "4", "--seq-len", "8",
            "--steps", "200", "--batch-size", "64", "--eval-every", "10", "--lr", "1e4", "--quiet", "--out", str(out)]
    assert main(argv) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "diverged at step" in err and "--lr" in err, err
    summary = json.loads((out / "summary.json").read_text())
    assert "mechanisms" not in summary and summary["diverged"]["step"] < 200
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().replace("NaN", "null").splitlines()]
    kept = load_checkpoint(out / "checkpoint.pt")
    assert kept["step"] == summary["diverged"]["kept_step"] < summary["diverged"]["step"]
    good = next(r for r in rows if r["step"] == kept["step"])
    assert good["test_loss"] is not None and good["test_loss"] < good["uniform_loss"] + torch.log(torch.tensor(4.0))
    weights = {k: v for k, v in kept["model"].items() if k.split(".")[-1].startswith(("W_", "b_", "w", "b"))}
    assert weights and all(torch.isfinite(v).all() for v in weights.values())  # (IGNORE, the mask, is -inf)

    assert main(["train", "--resume", "--lr", "1e-2", "--out", str(out), "--quiet", "--no-probes"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 200 and "diverged" not in summary
    assert summary["final_test_loss"] < summary["baselines"]["uniform"]
    assert json.loads((out / "config.json").read_text())["recipe"]["lr"] == 1e-2


def test_no_guard_trains_on(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--model", "attn-only", "--vocab", "4", "--seq-len", "8", "--steps", "40", "--batch-size", "64",
            "--eval-every", "10", "--lr", "1e4", "--quiet", "--no-probes", "--no-guard", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["guard"] is False
    assert json.loads((out / "summary.json").read_text())["steps"] == 40


def test_summary_and_report_name_every_head_above_threshold(tmp_path):
    from interp_causal.report import render_run

    out = tmp_path / "run"
    argv = ["train", "--model", "attn-only", "--layers", "2", "--heads", "3", "--vocab", "5", "--seq-len", "10",
            "--steps", "150", "--batch-size", "128", "--eval-every", "50", "--lr", "3e-2", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "probes.jsonl").read_text().splitlines()]
    final = max(r["step"] for r in rows)
    for key in ("parent_attention", "induction"):
        m = summary["mechanisms"][key]
        want = sorted(((r["layer"], r["head"]) for r in rows if r["probe"] == m["probe"] and r["metric"] == m["metric"]
                       and r["step"] == final and r["value"] is not None and r["value"] >= m["threshold"]),
                      key=lambda lh: -next(r["value"] for r in rows if r["probe"] == m["probe"] and
                                           r["metric"] == m["metric"] and r["step"] == final and (r["layer"], r["head"]) == lh))
        assert [(h["layer"], h["head"]) for h in m["heads"]] == want
        for h in m["heads"]:  # each head's formation step: its first probed step at or above the threshold
            series = sorted((r["step"], r["value"]) for r in rows if r["probe"] == m["probe"] and r["metric"] == m["metric"]
                            and (r["layer"], r["head"]) == (h["layer"], h["head"]))
            assert h["threshold_step"] == next(s for s, v in series if v >= m["threshold"])
    assert any(len(summary["mechanisms"][k]["heads"]) >= 2 for k in ("parent_attention", "induction"))
    numbers = render_run(out)
    assert "heads_over_training.png" in numbers["figures"]
