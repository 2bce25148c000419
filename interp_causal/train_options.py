"""The options of ``interp-causal train`` and the run config they make: one home, shared by
``train`` and ``sweep`` (whose grid keys are these options' names, parsed by the same types).

Torch-free at import, so that ``--help`` and a sweep's grid errors answer at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from interp_causal import names

GRAPH_HELP = ", ".join(names.GRAPHS[:-1]) + " or " + names.GRAPHS[-1]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def heads(text: str) -> tuple[int, ...]:
    try:
        heads = tuple(int(h) for h in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected heads per layer like '1,1' or '2,1', got {text!r}") from None
    if not heads or min(heads) < 1:
        raise argparse.ArgumentTypeError(f"expected positive head counts like '1,1', got {text!r}")
    return heads


def add_task_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--graph", default="chain", help=f"latent causal graph: {GRAPH_HELP} (default: chain)")
    p.add_argument("--vocab", type=positive_int, default=10, help="vocabulary size S (default: 10)")
    p.add_argument("--seq-len", type=positive_int, default=20, help="sequence length T (default: 20)")
    p.add_argument("--alpha", type=float, default=0.1, help="Dirichlet concentration (default: 0.1)")


def add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, choices=names.MODELS,
                   help="model preset (default: paper; paper-reduced with --recipe stagewise, the model of Algorithm 1)")
    p.add_argument("--layers", type=int, default=None, help="number of layers (default: 2)")
    p.add_argument("--heads", type=heads, default=None,
                   help="heads: per layer for the paper model, e.g. 2,1 (default: 1 per layer); one number for "
                        "the standard presets (default: 1)")
    p.add_argument("--d-model", type=int, default=None,
                   help="standard presets: residual width, a multiple of --heads (default: S + T, rounded up)")
    p.add_argument("--mlp", action=argparse.BooleanOptionalAction, default=None,
                   help="standard presets: MLP blocks (default: the preset's; mlp and layernorm have them)")
    p.add_argument("--layernorm", action=argparse.BooleanOptionalAction, default=None,
                   help="standard presets: LayerNorm (default: the preset's; layernorm has it)")
    p.add_argument("--positional", default=None, choices=("standard", "rotary"),
                   help="standard presets: learned or rotary positions (default: the preset's)")
    p.add_argument("--recipe", default=None, choices=names.RECIPES,
                   help="training recipe (default: fast for the paper models, standard for the standard presets)")
    p.add_argument("--steps", type=positive_int, default=None, help="total training steps (default: the recipe's)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default: the recipe's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    p.add_argument("--eval-every", type=positive_int, default=None, help="steps between test evaluations")
    p.add_argument("--stage-split", type=positive_int, default=None,
                   help="stage-wise recipes: the step where stage 2 begins (default: the recipe's, scaled with --steps)")
    p.add_argument("--seed", type=int, default=0, help="seed for the model, the data and the graph (default: 0)")
    p.add_argument("--forward", default="auto", choices=names.FORWARDS,
                   help="how training computes logits: structured (the paper model's fast path), hooked "
                        "(the model's own forward), auto (structured where it applies; default)")
    p.add_argument("--ablate", action="append", default=[], metavar="L.H",
                   help="zero-ablate head H of layer L (from 0) in every forward pass; repeatable")
    p.add_argument("--clamp", action="append", default=[], metavar="L.H=PATTERN",
                   help="make head L.H attend with PATTERN: previous, parents, parents:R (the R-th parent), "
                        "induction or graph_induction; repeatable")
    p.add_argument("--freeze", action="append", default=[], metavar="PARAM[@START:STOP]",
                   help="no updates to PARAM (e.g. blocks.0.attn.W_Q, or a prefix such as blocks.0.) in steps "
                        "START..STOP-1 (default: all); repeatable")
    p.add_argument("--no-guard", action="store_true",
                   help="keep training a run whose loss is not finite or stays far above the uniform guess "
                        "(by default such a run stops, keeping its last good checkpoint, exit status 3)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads (default: torch's, one per core); a sweep trial runs with --cpus-per-trial")
    p.add_argument("--no-probes", action="store_true", help="train without the probe callback")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def train_config(args: argparse.Namespace) -> tuple[dict, Path]:
    """The run config of ``train``'s options (a namespace of :func:`add_task_options` and
    :func:`add_training_options`) and the run directory ``train`` writes it to by default."""
    import torch

    from interp_causal.tasks import CausalGraph, InContextTask
    from interp_causal.training import get_recipe, make_config

    graph = CausalGraph.by_name(args.graph, args.seq_len, torch.Generator().manual_seed(args.seed))
    task = InContextTask(graph, args.vocab, args.alpha)
    model = args.model or ("paper-reduced" if args.recipe == "stagewise" else "paper")
    recipe_name = args.recipe or names.DEFAULT_RECIPES[model]
    base = get_recipe(recipe_name)
    split = args.stage_split
    if split is None and base.stage_split and args.steps:  # keep the recipe's proportion of the two stages
        split = max(1, base.stage_split * args.steps // base.steps)
    recipe = base.with_overrides(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                 eval_every=args.eval_every, stage_split=split)
    options = model_options(args, model)
    interventions = {"ablate": args.ablate, "clamp": args.clamp, "freeze": args.freeze}
    config = make_config(task, model, recipe, args.seed, options, forward=args.forward,
                         interventions={k: v for k, v in interventions.items() if v}, guard=not args.no_guard)
    out = Path("runs") / f"{task.graph.name}-s{task.vocab_size}-t{task.seq_len}-{model}-seed{args.seed}"
    return config, out


def model_options(args: argparse.Namespace, model: str) -> dict:
    """The preset's options from --layers, --heads, --d-model, --mlp, --layernorm, --positional,
    refused where they do not apply (the model itself checks the rest: divisibility, rotary width)."""
    if args.layers is not None and args.layers < 1:
        raise ValueError(f"layers: expected at least 1 layer, got {args.layers}")
    if args.d_model is not None and args.d_model < 1:
        raise ValueError(f"d_model: expected a positive width, got {args.d_model}")
    heads = None if args.heads is None else list(args.heads)
    if model.startswith("paper"):
        given = [f"--{k.replace('_', '-')}" for k in ("d_model", "mlp", "layernorm", "positional")
                 if getattr(args, k) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: the paper models' width and blocks are set by their layout; "
                             "they take --layers and --heads")
        if model == "paper-reduced" and (args.layers not in (None, 2) or heads not in (None, [1, 1])):
            raise ValueError("heads, layers: the reduced model of the theorem has two layers of one head each")
        if heads is not None and args.layers is not None and len(heads) not in (1, args.layers):
            raise ValueError(f"heads: {len(heads)} layers of heads given for --layers {args.layers}")
        if args.layers is not None or (heads is not None and len(heads) == 1):
            layers = args.layers or 2
            heads = heads * layers if heads is not None and len(heads) == 1 else heads or [1] * layers
        return {} if heads is None else {"heads": heads}
    options = {}
    if heads is not None:
        if len(set(heads)) != 1:
            raise ValueError(f"heads: a standard preset has the same number of heads in every layer; got {args.heads}")
        options["n_heads"] = heads[0]
    for key, value in (("n_layers", args.layers), ("d_model", args.d_model), ("mlp", args.mlp),
                       ("layernorm", args.layernorm), ("positional", args.positional)):
        if value is not None:
            options[key] = value
    return options
