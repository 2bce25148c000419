"""Test-suite settings: slow reproductions only on request; TransformerLens-version awareness."""

import os

import pytest
import torch

# The processes the suite starts (tutorial kernels, CLI runs, Ray workers) run at one intra-op thread,
# as the suite itself does: under `make test` two pytest-xdist workers share the 2 cores, and a
# kernel spinning two threads beside the other worker ran tutorials 02 and 03 in 390 s each
# instead of 28 and 85 (measured). The tutorials' seeded claims hold at 1 and at 2 threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _has_hooked_transformer() -> bool:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


HAS_HOOKED = _has_hooked_transformer()


# `make test` runs the suite on pytest-xdist workers (--dist loadgroup --no-loadscope-reorder): work
# goes out in collection order, so the longest tests come first (seconds on 2 cores, from
# --durations), and a long one never starts last to run alone at the end. Each file stays on one
# worker (an xdist group: its module fixtures are built once, Ray's cluster tests run one at a
# time), except the files in SPREAD, whose long, independent tests go to whichever worker is free.
LONGEST_FIRST = (
    "test_tutorial_runs_top_to_bottom[05_",  # 505
    "test_two_parents_each_layer_1_head_takes_one",  # 268
    "test_many_random_trees_attend_to_their_true_parents",  # 179
    "test_sweep.py",  # 250 in all
    "test_tutorial_runs_top_to_bottom[03_",  # 125
    "test_reproduce.py",  # 150 in all
    "test_science.py",
    "test_tutorials.py",
)
SPREAD = ("test_tutorials.py", "test_science.py")


def _longest_first(item) -> int:
    return next((rank for rank, name in enumerate(LONGEST_FIRST) if name in item.nodeid), len(LONGEST_FIRST))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    items.sort(key=_longest_first)  # stable: the rest keep their order
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            if item.path.name not in SPREAD:
                item.add_marker(pytest.mark.xdist_group(item.path.name))
    markexpr = config.getoption("-m") or ""
    skip_slow = pytest.mark.skip(reason="slow reproduction: run with `make reproduce-tests` (-m slow)")
    skip_hooked = pytest.mark.skip(reason="needs HookedTransformer (TransformerLens 3)")
    for item in items:
        if "slow" in item.keywords and "slow" not in markexpr:
            item.add_marker(skip_slow)
        if "needs_hooked" in item.keywords and not HAS_HOOKED:
            item.add_marker(skip_hooked)


@pytest.fixture(autouse=True)
def _single_seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread for the suite's tiny tensors: on a busy 2-core machine spinning threads
    made a 20 ms probe take 800 ms. Restored after each module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=["kernel", "torch"])
def structured_path(request, monkeypatch):
    """The structured path's two-layer model as the compiled kernel (``models/native.py``) or as
    torch ops. For ``"kernel"`` the test fails unless the kernel ran (a machine without a C
    compiler skips it); for ``"torch"`` the kernel is switched off."""
    from interp_causal.models import native

    if request.param == "torch":
        monkeypatch.setenv(native.ENV_SWITCH, "0")
        yield request.param
        return
    if native.library() is None:
        pytest.skip("the compiled kernel is unavailable here (no C compiler)")
    calls = []
    apply = native.PaperTwoLayers.apply
    monkeypatch.setattr(native.PaperTwoLayers, "apply", lambda *args: calls.append(1) or apply(*args))
    yield request.param
    assert calls, "the structured path did not run the compiled kernel"
