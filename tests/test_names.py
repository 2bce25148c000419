"""The command line's choices and the registries behind them agree, name for name."""

from __future__ import annotations

import argparse

import pytest
import torch

from interp_causal import names
from interp_causal.cli import build_parser
from interp_causal.experiments import EXPERIMENTS
from interp_causal.models import PRESETS
from interp_causal.tasks import CausalGraph
from interp_causal.training import RECIPES


def _choices(argv_prefix: list[str]) -> dict[str, tuple]:
    """``{dest: choices}`` of every option of a sub-command, read off the parser itself."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = sub.choices[argv_prefix[0]]
    return {a.dest: tuple(a.choices) for a in command._actions if a.choices is not None}


def test_train_choices_are_the_registries():
    choices = _choices(["train"])
    assert choices["model"] == tuple(PRESETS)
    assert choices["recipe"] == tuple(RECIPES)
    assert choices["forward"] == names.FORWARDS


def test_reproduce_choices_are_the_registries():
    choices = _choices(["reproduce"])
    assert choices["experiment"] == tuple(EXPERIMENTS)
    assert set(choices["profile"]) == set(names.PROFILES)
    for graph in choices["graph"]:
        assert CausalGraph.by_name(graph, 20, torch.Generator().manual_seed(0)).seq_len == 20


def test_names_module_is_the_registries():
    assert names.MODELS == tuple(PRESETS)
    assert names.RECIPES == tuple(RECIPES)
    assert names.EXPERIMENTS == tuple(EXPERIMENTS)


@pytest.mark.parametrize("name", names.GRAPHS)
def test_every_graph_name_builds(name):
    concrete = name.replace("-N", "-2")  # markov-N stands for any order
    graph = CausalGraph.by_name(concrete, 12, torch.Generator().manual_seed(0))
    assert graph.seq_len == 12


def test_an_unknown_graph_names_every_family():
    with pytest.raises(ValueError) as err:
        CausalGraph.by_name("lattice", 12)
    for name in names.GRAPHS:
        assert name in str(err.value)


def test_the_names_module_loads_without_torch():
    import subprocess
    import sys

    code = "import sys, interp_causal.names, interp_causal.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_every_model_has_a_default_recipe():
    assert set(names.DEFAULT_RECIPES) == set(names.MODELS)
    assert set(names.DEFAULT_RECIPES.values()) <= set(names.RECIPES)
