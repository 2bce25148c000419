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


# The longest files, longest first (minutes on 2 cores): `make test` hands whole files to its
# pytest-xdist workers in collection order (--dist loadfile --no-loadscope-reorder), and a long
# file started last would leave one worker running it alone at the end
LONGEST_FIRST = ("test_tutorials.py", "test_science.py", "test_sweep.py", "test_reproduce.py")


def _longest_first(item) -> int:
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_longest_first)  # stable: each file's own order is kept
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
