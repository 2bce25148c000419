"""The compiled kernel of the structured path (``interp_causal/models/native.py``): what the
equality tests of ``test_structured.py``, ``test_structured_bridge.py`` and ``test_stacked.py``
(each run on the kernel and on torch ops, against TransformerLens's own forward) do not reach:
shapes the paper's runs do not use, bad tokens, non-finite weights, a second backward pass,
threads, the stored-or-recomputed state, and the fallback where there is no compiler."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from interp_causal import compiled
from interp_causal.models import native, paper_layout, paper_model, structured
from interp_causal.tasks import CausalGraph, InContextTask

pytestmark = [pytest.mark.needs_hooked,
              pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to build the kernel")]
TOL = 1e-5


def _model(S: int, T: int, heads: tuple, seed: int = 0):
    task = InContextTask(CausalGraph.chain(T), S)
    model = paper_model(task, heads=heads, init="normal", seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    layout = paper_layout(model)
    with torch.no_grad():
        for layer, m in enumerate(layout.heads):
            w = layout.widths[layer]
            model.blocks[layer].attn.W_Q[:m, :w, :w] = torch.randn(m, w, w, generator=g)
        model.unembed.W_U.copy_(torch.randn(model.unembed.W_U.shape, generator=g))
    return task, model


def _grads(model, logits: torch.Tensor, target: torch.Tensor) -> dict:
    model.zero_grad(set_to_none=True)
    (-(target * logits.log_softmax(-1)).sum(-1).mean()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("S, T, n, heads", [
    (2, 3, 3, (1, 1)),  # shorter than one vector of 8
    (7, 9, 9, (2, 2)),  # two layer-2 heads
    (4, 33, 33, (1, 1)),  # rows of five vectors
    (6, 17, 8, (3, 1)),  # a sequence shorter than the context, exactly one vector
    (3, 20, 20, (1, 1)),  # many-trees' shape
])
def test_the_kernel_equals_the_hooked_model_on_other_shapes(S, T, n, heads):
    task, model = _model(S, T, heads)
    batch = task.sample(70, torch.Generator().manual_seed(2))
    tokens = batch.tokens[:, :n]
    want = model(tokens)[:, -1]
    want_grads = _grads(model, want, batch.target)
    assert native.applies((model.unembed.W_U,), tokens)
    got = structured.last_logits(model, tokens)
    got_grads = _grads(model, got, batch.target)
    assert (got - want).abs().max() <= TOL
    assert got_grads.keys() == want_grads.keys()
    for name, grad in got_grads.items():
        assert (grad - want_grads[name]).abs().max() <= TOL, name
        assert want_grads[name].abs().max() > 1e-3


def test_tokens_out_of_range_are_refused_before_the_kernel_reads_memory_with_them():
    task, model = _model(5, 10, (1, 1))
    tokens = task.sample(4, torch.Generator().manual_seed(0)).tokens
    for bad in (5, -1):
        tokens_bad = tokens.clone()
        tokens_bad[1, 3] = bad
        with pytest.raises(ValueError, match=r"tokens: expected values in \[0, 5\)"):
            structured.last_logits(model, tokens_bad)
    with pytest.raises(ValueError, match="tokens: expected 1 to 10 positions"):
        structured.last_logits(model, torch.zeros(2, 11, dtype=torch.long))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_weight_gives_nan_exactly_where_it_is_used(value):
    """A[2, 3] non-finite: a sequence with token 3 before a token 2 scores that pair (unmasked), its
    layer-1 row is NaN (inf - inf in the softmax for +inf), and every layer-2 score reads the row,
    so all its logits are NaN; every other sequence stays finite, whatever the weight (a masked
    pair is never scored). The trainer's guard then sees a non-finite loss, as on torch's path."""
    task, model = _model(5, 10, (1, 1))
    with torch.no_grad():
        model.blocks[0].attn.W_Q[0, 2, 3] = value
    tokens = task.sample(64, torch.Generator().manual_seed(0)).tokens
    uses = torch.tensor([any(s[j] == 2 and s[k] == 3 for j in range(10) for k in range(j)) for s in tokens.tolist()])
    assert 0 < int(uses.sum()) < 64
    got = structured.last_logits(model, tokens)
    assert torch.isnan(got[uses]).all() and torch.isfinite(got[~uses]).all()


def _logits_and_grads(model, tokens, target):
    logits = structured.last_logits(model, tokens)
    return logits.detach(), _grads(model, logits, target)


def test_the_stored_state_and_the_recomputed_one_give_the_same_bits(monkeypatch):
    """The forward pass stores the attention rows for the backward pass, up to SAVE_MAX_BYTES;
    above it the backward pass recomputes them, by the same code, so to the bit."""
    task, model = _model(6, 12, (2, 1))
    batch = task.sample(96, torch.Generator().manual_seed(3))
    stored = _logits_and_grads(model, batch.tokens, batch.target)
    monkeypatch.setattr(native, "SAVE_MAX_BYTES", 0)
    recomputed = _logits_and_grads(model, batch.tokens, batch.target)
    assert torch.equal(stored[0], recomputed[0])
    for name in stored[1]:
        assert torch.equal(stored[1][name], recomputed[1][name]), name


def test_a_second_backward_pass_through_a_retained_graph_is_right():
    """The stored state goes back to a pool after the first backward pass; a second one
    (retain_graph) must not read a buffer that another forward pass has overwritten since."""
    task, model = _model(6, 12, (1, 1))
    batch = task.sample(64, torch.Generator().manual_seed(4))
    logits = structured.last_logits(model, batch.tokens)
    loss = -(batch.target * logits.log_softmax(-1)).sum(-1).mean()
    loss.backward(retain_graph=True)
    first = model.blocks[0].attn.W_Q.grad.clone()
    other = task.sample(64, torch.Generator().manual_seed(5))
    structured.last_logits(model, other.tokens).sum().backward()  # takes the freed buffer, writes it
    model.zero_grad(set_to_none=True)
    loss.backward()
    assert torch.equal(model.blocks[0].attn.W_Q.grad, first)


def _cc_has_openmp(tmp_path) -> bool:
    source = tmp_path / "omp.c"
    source.write_text("#include <omp.h>\nint f(void) { return omp_get_max_threads(); }\n")
    done = subprocess.run([shutil.which("cc"), "-fopenmp", "-fPIC", "-shared", str(source), "-o", str(tmp_path / "omp.so")],
                          capture_output=True)
    return done.returncode == 0


@pytest.mark.parametrize("way", ["openmp", "python threads"])
def test_two_threads_split_the_batch_and_agree_with_one(way, monkeypatch, tmp_path):
    if way == "openmp" and not _cc_has_openmp(tmp_path):
        pytest.skip("the C compiler has no OpenMP")
    monkeypatch.setitem(native._state, "python_threads", way == "python threads")
    assert native.openmp() == (way == "openmp")
    task, model = _model(10, 20, (1, 1))
    batch = task.sample(256, torch.Generator().manual_seed(6))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _logits_and_grads(model, batch.tokens, batch.target)
        torch.set_num_threads(2)
        assert len(native._ranges(256)) == 2
        two = _logits_and_grads(model, batch.tokens, batch.target)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0])  # each sequence's forward pass is the same code either way
    for name in one[1]:
        assert (one[1][name] - two[1][name]).abs().max() <= 1e-6, name


def test_no_grad_forward_equals_the_training_forward():
    task, model = _model(5, 16, (2, 1))
    tokens = task.sample(50, torch.Generator().manual_seed(7)).tokens
    with torch.no_grad():
        evaluated = structured.last_logits(model, tokens)
    assert torch.equal(evaluated, structured.last_logits(model, tokens).detach())


def test_without_a_compiler_the_structured_path_stays_in_torch(monkeypatch, tmp_path):
    task, model = _model(5, 10, (1, 1))
    tokens = task.sample(8, torch.Generator().manual_seed(8)).tokens
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert native.library() is None and not native.applies((model.unembed.W_U,), tokens)
    off = structured.last_logits(model, tokens)
    monkeypatch.delenv(native.ENV_SWITCH)
    monkeypatch.setattr(compiled, "_state", {})  # forget the library loaded so far
    monkeypatch.setenv("INTERP_CAUSAL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a compiler that fails
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert native.library() is None
    assert any("compiling paper_kernel.c failed" in str(w.message) for w in caught)
    assert list(tmp_path.rglob("*.so")) == []  # nothing half-written is left
    assert torch.allclose(structured.last_logits(model, tokens), off, atol=TOL)


def test_a_compiler_without_openmp_builds_the_kernel_for_python_threads(monkeypatch, tmp_path):
    task, model = _model(10, 20, (1, 1))
    tokens = task.sample(256, torch.Generator().manual_seed(9)).tokens
    want = structured.last_logits(model, tokens)
    fake = tmp_path / "cc-without-openmp"  # refuses -fopenmp, passes anything else to the real cc
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && exit 1; done\nexec {shutil.which("cc")} "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(compiled, "_state", {})
    monkeypatch.setenv("INTERP_CAUSAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(fake))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback build is not a failure
        assert native.library() is not None
    assert not native.openmp() and len(list((tmp_path / "cache").rglob("*.so"))) == 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.equal(structured.last_logits(model, tokens), want)
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_kernel_runs_on_torchs_openmp_runtime(tmp_path):
    """A second OpenMP runtime would keep its own team of threads spinning on the cores torch's use.
    (Other packages may bring their own, e.g. sentencepiece's: the kernel must add none.)"""
    if not _cc_has_openmp(tmp_path):
        pytest.skip("the C compiler has no OpenMP")
    script = """
import torch
from pathlib import Path
from interp_causal import compiled
from interp_causal.models import native, paper_model, structured
from interp_causal.tasks import CausalGraph, InContextTask

def runtimes():
    maps = Path("/proc/self/maps").read_text().splitlines()
    return {line.split()[-1] for line in maps if "gomp" in line or "libomp" in line or "libiomp" in line}

torch.set_num_threads(2)
task = InContextTask(CausalGraph.chain(10), 5)
model = paper_model(task)
tokens = task.sample(256, torch.Generator().manual_seed(0)).tokens
before = runtimes()
assert str(native.SOURCE) not in compiled._state  # the kernel is not loaded yet
structured.last_logits(model, tokens)
assert native.openmp() and len(native._ranges(256)) == 2
print(sorted(before), sorted(runtimes()))
assert runtimes() == before, (before, runtimes())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(compiled, "_state", {})
    monkeypatch.setenv("INTERP_CAUSAL_CACHE", str(tmp_path))
    assert native.library() is not None
    built = list(tmp_path.rglob("paper_kernel-*.so"))
    assert len(built) == 1 and not [p for p in tmp_path.rglob("*") if p.is_file() and p not in built]
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(compiled, "_state", {})
    assert native.library() is not None and built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
