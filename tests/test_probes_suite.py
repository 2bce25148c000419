"""ProbeSuite: one forward pass, only the sites needed, the same numbers on every kind of model, tidy output."""

import io
import json
import math

import pytest
import torch

from probes import (
    BehaviourProbe,
    GradientProbe,
    GraphInductionProbe,
    ICLScore,
    InductionProbe,
    LinearCopyingProbe,
    ParentAttention,
    PreviousTokenAttention,
    ProbeResult,
    ProbeSuite,
    Record,
    chain_parents,
    default_suite,
    read_jsonl,
)
from probes_helpers import Config, all_models, random_weights

CFG = Config()
WEIGHTS = random_weights(CFG, seed=21)
T = 12
PARENTS = chain_parents(T - 1) + [[]]
TOKENS = torch.randint(0, CFG.d_vocab, (16, T), generator=torch.Generator().manual_seed(22))
REFERENCE = torch.softmax(torch.randn(16, CFG.d_vocab, generator=torch.Generator().manual_seed(23)), -1)


def _suite():
    return ProbeSuite([
        ParentAttention(PARENTS), PreviousTokenAttention(), InductionProbe(), GraphInductionProbe(PARENTS),
        LinearCopyingProbe(PARENTS, solver="ridge"), BehaviourProbe(), ICLScore(), GradientProbe(PARENTS, layer=0),
    ])


@pytest.fixture(scope="module")
def models():
    return all_models(CFG, WEIGHTS)


def test_same_numbers_on_hooked_transformer_bridge_and_plain_module(models):
    results = {kind: _suite().run(m, TOKENS, site_map=sm, reference=REFERENCE, targets=REFERENCE)
               for kind, (m, sm) in models.items()}
    keyed = {kind: {(r.probe, r.layer, r.head, r.metric): r for r in res} for kind, res in results.items()}
    first = keyed["bridge"]
    # 4 heads: parent 12, previous 12, induction 8, graph 4x3; copying 2x3; behaviour 5; icl 3; gradient 2
    assert len(first) == 60
    for kind, recs in keyed.items():
        assert recs.keys() == first.keys(), kind
        for key, rec in recs.items():
            a, b = rec.value, first[key].value
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-5, rel=1e-4), (kind, key, a, b)
        g = torch.tensor(recs[("gradient_mi", 0, 1, "gradient_norm")].extra["gradient"])
        torch.testing.assert_close(g, torch.tensor(first[("gradient_mi", 0, 1, "gradient_norm")].extra["gradient"]),
                                   atol=1e-5, rtol=1e-4)


def test_one_forward_pass_capturing_only_the_needed_sites(models, monkeypatch):
    suite = ProbeSuite([ParentAttention(PARENTS, layers=[0]), GraphInductionProbe(PARENTS, layers=[1]),
                        LinearCopyingProbe(PARENTS, layers=[0], solver="ridge"), BehaviourProbe()])
    want = ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern", "blocks.0.hook_resid_post"]
    for kind, (model, site_map) in models.items():
        assert suite.sites(model, site_map) == want
        calls = []
        handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
        fired = []
        if kind == "plain":
            original = torch.nn.Module.register_forward_hook

            def spy(self, *a, **kw):
                fired.extend(name for name, m in model.named_modules() if m is self)
                return original(self, *a, **kw)

            monkeypatch.setattr(torch.nn.Module, "register_forward_hook", spy)
        else:
            original = model.hooks

            def spy(fwd_hooks=(), **kw):
                fired.extend(name for name, _ in fwd_hooks)
                return original(fwd_hooks=fwd_hooks, **kw)

            monkeypatch.setattr(model, "hooks", spy)
            monkeypatch.setattr(model, "run_with_cache", lambda *a, **k: pytest.fail("built a full cache"))
        suite.run(model, TOKENS, site_map=site_map)
        handle.remove()
        monkeypatch.undo()
        assert len(calls) == 1, f"{kind}: {len(calls)} forward passes"
        if kind == "plain":
            assert sorted(fired) == sorted(site_map[s] for s in want)
        else:
            hooked = {model.hook_dict[s].name for s in want}
            assert sorted(fired) == sorted(hooked), kind


def test_the_gradient_probe_runs_its_own_pass_after_the_shared_one(models):
    model, site_map = models["plain"]
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    ProbeSuite([PreviousTokenAttention(), GradientProbe(PARENTS)]).run(model, TOKENS, site_map=site_map, targets=REFERENCE)
    handle.remove()
    assert calls == [False, True]


def test_records_to_frame_jsonl_and_best(tmp_path):
    records = [Record("p", 0, 0, "m", 0.5, {"per_position": [None, 1.0]}), Record("p", 0, 1, "m", 0.7),
               Record("p", None, None, "m2", float("nan"))]
    result = ProbeResult(records)
    frame = result.to_frame()
    assert list(frame.columns[:5]) == ["probe", "layer", "head", "metric", "value"]
    assert str(frame["layer"].dtype) == "Int64" and frame["layer"].isna().sum() == 1
    assert (result.best("p", "m").layer, result.best("p", "m").head) == (0, 1)
    assert result.best("p", "m", largest=False).head == 0
    assert result.value("p", "m", 0, 1) == 0.7
    with pytest.raises(KeyError, match="no records for probe='p', metric='zz'"):
        result.best("p", "zz")
    path = tmp_path / "out.jsonl"
    result.to_jsonl(path, step=3)
    result.to_jsonl(path, step=4)
    rows = read_jsonl(path)
    assert len(rows) == 6 and rows[2]["value"] is None and rows[3]["step"] == 4
    assert rows[0] == {"probe": "p", "layer": 0, "head": 0, "metric": "m", "value": 0.5, "per_position": [None, 1.0], "step": 3}
    assert Record.from_dict(rows[0]).extra == {"per_position": [None, 1.0], "step": 3}
    buffer = io.StringIO()
    result.to_jsonl(buffer)
    assert [json.loads(line)["head"] for line in buffer.getvalue().splitlines()] == [0, 1, None]
    path.write_text(path.read_text() + '{"probe": "p", "la')  # a torn last line is skipped
    assert len(read_jsonl(path)) == 6
    with pytest.raises(ValueError, match="would overwrite"):
        Record("p", 0, 0, "m", 1.0, {"value": 2}).to_dict()


def test_inputs_are_validated_at_the_boundary(models):
    model, site_map = models["plain"]
    suite = default_suite(PARENTS)
    with pytest.raises(TypeError, match="tokens: expected integer token ids, got dtype torch.float32"):
        suite.run(model, TOKENS.float(), site_map=site_map)
    with pytest.raises(ValueError, match=r"tokens: expected shape \[batch, pos\]"):
        suite.run(model, TOKENS[0], site_map=site_map)
    with pytest.raises(ValueError, match="parents: expected one parent list per position"):
        suite.run(model, TOKENS[:, :5], site_map=site_map)
    with pytest.raises(ValueError, match=r"parents\[2\]: parent 3 is not an earlier position"):
        ParentAttention([[], [0], [3]])
    with pytest.raises(TypeError, match="probes: expected Probe instances"):
        ProbeSuite([ParentAttention(PARENTS), "induction"])
    with pytest.raises(ValueError, match="out of range for a 2-layer model"):
        ProbeSuite([PreviousTokenAttention(layers=[5])]).run(model, TOKENS, site_map=site_map)
