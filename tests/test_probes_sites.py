"""Sites: canonical names resolve on every kind of model, capture the right tensors, and fail helpfully."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from probes import MissingSiteError, find_site, model_dims, offered_sites, run_with_sites
from probes_helpers import Config, all_models, plain_model, random_weights, reference_forward

CFG = Config()
WEIGHTS = random_weights(CFG, seed=0)
TOKENS = torch.randint(0, CFG.d_vocab, (3, 9), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def models():
    return all_models(CFG, WEIGHTS)


def test_import_loads_neither_transformer_lens_nor_sklearn():
    code = ("import sys, probes; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('transformer_lens', 'sklearn', 'pandas', 'scipy')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_captured_activations_match_an_independent_forward_pass(models):
    ref_logits, ref_patterns = reference_forward(CFG, {k: v.double() for k, v in WEIGHTS.items()}, TOKENS)
    sites = ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern", "blocks.1.hook_resid_post"]
    for kind, (model, site_map) in models.items():
        with torch.no_grad():
            logits, acts = run_with_sites(model, TOKENS, sites, site_map)
        assert set(acts) == set(sites), kind
        for l in range(2):
            torch.testing.assert_close(acts[f"blocks.{l}.attn.hook_pattern"].double(), ref_patterns[l], atol=1e-5, rtol=0)
        # The last residual stream times the unembedding is the logits.
        resid = acts["blocks.1.hook_resid_post"].double()
        torch.testing.assert_close(resid @ WEIGHTS["unembed.W_U"].double() + WEIGHTS["unembed.b_U"], ref_logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(logits.double(), ref_logits, atol=1e-4, rtol=0)


def test_bridge_offers_its_canonical_names_and_tl3_aliases(models):
    bridge = models["bridge"][0]
    assert find_site(bridge, "blocks.0.hook_resid_post").hook_name == "blocks.0.hook_out"
    assert find_site(bridge, "blocks.1.attn.hook_z").hook_name == "blocks.1.attn.o.hook_in"
    with torch.no_grad():
        _, a = run_with_sites(bridge, TOKENS, ["blocks.0.hook_resid_post", "blocks.0.hook_out", "hook_embed"])
    torch.testing.assert_close(a["blocks.0.hook_resid_post"], a["blocks.0.hook_out"])
    torch.testing.assert_close(a["hook_embed"], WEIGHTS["embed.W_E"][TOKENS])


def _tiny_root_module(names):
    """A HookedRootModule offering only ``names`` (HookPoints applied in order to the embedding)."""
    from transformer_lens import HookedRootModule
    from transformer_lens.hook_points import HookPoint

    class Tiny(HookedRootModule):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(5, 4)
            self.points = nn.ModuleDict({n.replace(".", "__"): HookPoint() for n in names})
            self.setup()

        def forward(self, tokens):
            x = self.embed(tokens)
            for p in self.points.values():
                x = p(x) + 1.0
            return x

    return Tiny()


def test_any_hooked_root_module_and_bridge_spellings_as_fallback():
    torch.manual_seed(0)
    model = _tiny_root_module(["blocks.0.hook_in", "blocks.0.hook_out"])
    offered = set(model.hook_dict)
    assert offered == {"points.blocks__0__hook_in", "points.blocks__0__hook_out"}
    # Names come from module paths; map them, or rely on the bridge spellings if they match.
    site_map = {"blocks.0.hook_resid_post": "points.blocks__0__hook_out"}
    tokens = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        _, acts = run_with_sites(model, tokens, ["blocks.0.hook_resid_post"], site_map)
        expected = model.embed(tokens) + 1.0  # the second point sees the first point's output + 1
    torch.testing.assert_close(acts["blocks.0.hook_resid_post"], expected)

    class Renamed(nn.Module):  # a hooked model whose hook_dict uses the bridge's canonical names
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.hook_dict = {"blocks.0.hook_out": inner.points["blocks__0__hook_out"]}
            self.hooks = inner.hooks

        def forward(self, tokens):
            return self.inner(tokens)

    renamed = Renamed(model)
    site = find_site(renamed, "blocks.0.hook_resid_post")
    assert site.hook_name == "points.blocks__0__hook_out"  # the HookPoint's own name, for hooks()
    with torch.no_grad():
        _, acts = run_with_sites(renamed, tokens, ["blocks.0.hook_resid_post"])
    torch.testing.assert_close(acts["blocks.0.hook_resid_post"], expected)


def test_missing_site_lists_what_the_model_offers(models):
    for kind, (model, site_map) in models.items():
        with pytest.raises(MissingSiteError) as err:
            find_site(model, "blocks.7.attn.hook_pattern", site_map)
        msg = str(err.value)
        assert "blocks.7.attn.hook_pattern" in msg and "blocks.{0,1}.attn.hook_pattern" in msg, (kind, msg)
    plain, _ = plain_model(CFG, WEIGHTS)
    with pytest.raises(MissingSiteError, match="site_map=") as err:
        find_site(plain, "blocks.0.attn.hook_pattern")
    assert "nothing" in str(err.value)


def test_site_map_errors_name_the_problem():
    plain, site_map = plain_model(CFG, WEIGHTS)
    with pytest.raises(MissingSiteError, match="no submodule 'taps.nope'.*taps.pattern0"):
        find_site(plain, "blocks.0.attn.hook_pattern", {"blocks.0.attn.hook_pattern": "taps.nope"})
    with pytest.raises(ValueError, match="not a submodule"):
        find_site(plain, "blocks.0.attn.hook_pattern", {"blocks.0.attn.hook_pattern": nn.Identity()})
    with pytest.raises(TypeError, match="expected an nn.Module or a dotted submodule name"):
        find_site(plain, "blocks.0.attn.hook_pattern", {"blocks.0.attn.hook_pattern": 3})


def test_edits_replace_the_activation_and_hooks_are_removed(models):
    zero = {"blocks.1.hook_resid_post": torch.zeros_like}
    for kind, (model, site_map) in models.items():
        with torch.no_grad():
            logits, _ = run_with_sites(model, TOKENS, ["blocks.1.hook_resid_post"], site_map, edits=zero)
            plain_logits = model(TOKENS)
        torch.testing.assert_close(logits, WEIGHTS["unembed.b_U"].expand_as(logits), msg=kind)
        assert not torch.allclose(plain_logits, logits), f"{kind}: the edit outlived the call"
        leftover = [m for m in model.modules() if getattr(m, "_forward_hooks", None)]
        assert not leftover, f"{kind}: hooks left behind on {leftover[:3]}"


def test_model_dims_from_cfg_or_site_map(models):
    for kind, (model, site_map) in models.items():
        dims = model_dims(model, site_map)
        assert dims.n_layers == 2, kind
        assert dims.n_heads == (None if kind == "plain" else 2), kind
    with pytest.raises(ValueError, match="cannot tell how many layers"):
        model_dims(nn.Linear(2, 2))


def test_offered_sites_lists_hook_points_and_site_map(models):
    model, _ = models["bridge"]
    offered = offered_sites(model)
    assert "blocks.1.attn.hook_pattern" in offered and "blocks.1.hook_out" in offered
    plain, site_map = models["plain"]
    assert offered_sites(plain, site_map) == sorted(site_map)
