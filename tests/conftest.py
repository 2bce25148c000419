"""Test-suite settings: slow reproductions only on request; TransformerLens-version awareness."""

import pytest
import torch


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


def pytest_collection_modifyitems(config, items):
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
