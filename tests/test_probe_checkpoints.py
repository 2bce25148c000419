"""Probing saved checkpoints: a directory of Hugging Face checkpoints through the CLI, and bad directories."""

from __future__ import annotations

import json

import pytest
import torch

from interp_causal.cli import main
from probes import PreviousTokenAttention, ProbeSuite
from probes.checkpoints import find_checkpoints, probe_checkpoints, step_of

pytest.importorskip("transformers")
from probes.testing import planted_gpt2  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def save_checkpoints(root, strengths=(0.0, 0.2, 30.0), steps=(0, 100, 200)):
    """Three checkpoints of a GPT-2 whose planted heads sharpen as "training" goes on."""
    for step, strength in zip(steps, strengths):
        planted_gpt2(vocab=16, n_ctx=32, strength=strength).save_pretrained(root / f"checkpoint-{step}")
    return root


def test_the_cli_probes_a_directory_of_checkpoints(tmp_path, capsys):
    root = save_checkpoints(tmp_path / "ckpts")
    assert [s for s, _ in find_checkpoints(root)] == [0, 100, 200]
    assert main(["probe", str(root), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in (root / "probes.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == [0, 100, 200]
    prev = printed["formation"]["previous_token"]
    assert (prev["layer"], prev["head"], prev["threshold_step"]) == (0, 1, 200)
    induction = printed["formation"]["induction"]
    assert (induction["layer"], induction["head"]) == (1, 0)
    for name in ("heads.png", "heads_over_training.png"):
        assert (root / "figures" / name).read_bytes()[:8] == PNG
    assert json.loads((root / "probe_summary.json").read_text())["steps"] == [0, 100, 200]


def test_one_hugging_face_model_directory(tmp_path, capsys):
    planted_gpt2(vocab=16, n_ctx=32).save_pretrained(tmp_path / "model")
    assert main(["probe", str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    heads = json.loads(capsys.readouterr().out)["heads"]
    assert torch.tensor(heads["previous_token"]).argmax() == 1  # layer 0, head 1
    assert (tmp_path / "out" / "figures" / "heads.png").is_file()


@pytest.mark.parametrize("damage", ["no weights", "pickle only", "not a model"])
def test_a_bad_directory_exits_with_one_line_and_writes_nothing(tmp_path, capsys, damage):
    root = save_checkpoints(tmp_path / "ckpts", strengths=(1.0, 2.0), steps=(1, 2))
    bad = root / "checkpoint-3"
    if damage == "not a model":
        bad.mkdir()
        (bad / "notes.txt").write_text("hello")
    else:
        planted_gpt2(vocab=16, n_ctx=32).config.save_pretrained(bad)
        if damage == "pickle only":
            torch.save({"weights": torch.nn.Linear(2, 2)}, bad / "pytorch_model.bin")  # a module: needs full unpickling
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    capsys.readouterr()  # the set-up's own output
    assert main(["probe", str(root), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint-3" in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_an_unrecognised_path_is_refused(tmp_path, capsys):
    assert main(["probe", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err


def test_probe_checkpoints_with_any_loader():
    models = {step: planted_gpt2(vocab=16, n_ctx=32, strength=s) for step, s in ((5, 0.0), (10, 30.0))}
    tokens = torch.randint(0, 16, (4, 32), generator=torch.Generator().manual_seed(0))
    monitor = probe_checkpoints([(10, 10), (5, 5)], models.__getitem__, ProbeSuite([PreviousTokenAttention()]), tokens,
                                progress=False)
    assert [r["step"] for r in monitor.rows][0] == 5
    assert monitor.formation("previous_token", "score", 0.5)["threshold_step"] == 10
    assert step_of("run-7") == 7 and step_of("gpt2") is None
    with pytest.raises(ValueError, match="cannot tell the step of model"):
        probe_checkpoints(["model"], models.__getitem__, ProbeSuite([PreviousTokenAttention()]), tokens)
