"""``interp-causal``: demo, train, probe. Heavy imports (torch, TransformerLens) happen inside
the commands so that ``--help`` answers at once."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from interp_causal import names

GRAPH_HELP = ", ".join(names.GRAPHS[:-1]) + " or " + names.GRAPHS[-1]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _heads(text: str) -> tuple[int, ...]:
    try:
        heads = tuple(int(h) for h in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected heads per layer like '1,1' or '2,1', got {text!r}") from None
    if not heads or min(heads) < 1:
        raise argparse.ArgumentTypeError(f"expected positive head counts like '1,1', got {text!r}")
    return heads


def _add_task_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--graph", default="chain", help=f"latent causal graph: {GRAPH_HELP} (default: chain)")
    p.add_argument("--vocab", type=_positive_int, default=10, help="vocabulary size S (default: 10)")
    p.add_argument("--seq-len", type=_positive_int, default=20, help="sequence length T (default: 20)")
    p.add_argument("--alpha", type=float, default=0.1, help="Dirichlet concentration (default: 0.1)")


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, choices=names.MODELS,
                   help="model preset (default: paper; paper-reduced with --recipe stagewise, the model of Algorithm 1)")
    p.add_argument("--layers", type=int, default=None, help="number of layers (default: 2)")
    p.add_argument("--heads", type=_heads, default=None,
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
    p.add_argument("--steps", type=_positive_int, default=None, help="total training steps (default: the recipe's)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="batch size (default: the recipe's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    p.add_argument("--eval-every", type=_positive_int, default=None, help="steps between test evaluations")
    p.add_argument("--stage-split", type=_positive_int, default=None,
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
    p.add_argument("--no-probes", action="store_true", help="train without the probe callback")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interp-causal",
        description="Train small transformers on in-context causal tasks and probe what they learn, and when.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train the paper's model on in-context Markov chains and print a summary")
    demo.add_argument("--out", default="runs/demo", help="run directory, replaced if it exists (default: runs/demo)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")

    train = sub.add_parser("train", help="train a model on an in-context causal task into a run directory")
    _add_task_options(train)
    _add_training_options(train)
    train.add_argument("--out", default=None, help="run directory (default: runs/GRAPH-sS-tT-MODEL-seedN)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out up to --steps in total")

    probe = sub.add_parser("probe", help="probe a run, a Hugging Face model directory or a directory of checkpoints")
    probe.add_argument("path", help="a run directory (train, demo), a local Hugging Face model directory "
                                    "(config.json + safetensors), or a directory of them (checkpoint-*/, step*/)")
    probe.add_argument("--batch-size", type=_positive_int, default=None,
                       help="probe batch size (default: 512 for a run, 64 for Hugging Face checkpoints)")
    probe.add_argument("--seq-len", type=_positive_int, default=None,
                       help="Hugging Face checkpoints: length of the repeated random tokens (default: the context, at most 128)")
    probe.add_argument("--seed", type=int, default=0, help="seed of the probe batch (default: 0)")
    probe.add_argument("--out", default=None, help="Hugging Face checkpoints: where to write (default: PATH)")
    probe.add_argument("--quiet", action="store_true", help="no progress bar")

    rep = sub.add_parser("reproduce", help="reproduce one of the paper's experiments, with figures and a report")
    rep.add_argument("experiment", choices=names.EXPERIMENTS, help="which experiment (docs/science.md §4)")
    rep.add_argument("--profile", default="quick", choices=names.PROFILES,
                     help="quick: minutes; paper: the paper's recipe; tiny: a smoke test (default: quick)")
    rep.add_argument("--graph", default=None, choices=names.CHAIN_EXPERIMENT_GRAPHS,
                     help="chain experiment only (default: chain)")
    rep.add_argument("--out", default=None, help="output directory, replaced if it exists (default: runs/reproduce/NAME-PROFILE)")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")

    report = sub.add_parser("report", help="render figures and report.md for a run directory")
    report.add_argument("run_dir", help="a run directory written by train or demo")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"demo": cmd_demo, "train": cmd_train, "probe": cmd_probe, "reproduce": cmd_reproduce, "report": cmd_report}
        return commands[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"interp-causal {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _task_from_args(args):
    import torch

    from interp_causal.tasks import CausalGraph, InContextTask

    graph = CausalGraph.by_name(args.graph, args.seq_len, torch.Generator().manual_seed(args.seed))
    return InContextTask(graph, args.vocab, args.alpha)


def cmd_demo(args) -> int:
    from interp_causal.tasks import CausalGraph, InContextTask
    from interp_causal.training import get_recipe, make_config

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    task = InContextTask(CausalGraph.chain(20), 10, 0.1)
    config = make_config(task, "paper", get_recipe("fast"), seed=0)
    return _train(config, out, resume=False, probes=True, quiet=args.quiet)


def cmd_train(args) -> int:
    from interp_causal.training import get_recipe, make_config

    out = Path(args.out) if args.out else None
    given = [f"--{k}" for k in ("ablate", "clamp", "freeze") if getattr(args, k)]
    if args.resume:
        if out is None:
            raise ValueError("out: --resume needs --out, the run directory to continue")
        if given:
            raise ValueError(f"{', '.join(given)}: a resumed run applies the interventions in its config.json; "
                             "they cannot change half-way")
        sized = [f"--{k.replace('_', '-')}" for k in ("model", "layers", "heads", "d_model", "mlp", "layernorm",
                                                      "positional", "recipe") if getattr(args, k) is not None]
        if sized:
            raise ValueError(f"{', '.join(sized)}: a resumed run rebuilds its model and recipe from its config.json "
                             "(only --steps and --lr can change)")
        return _train(None, out, resume=True, probes=not args.no_probes, quiet=args.quiet, steps=args.steps,
                      lr=args.lr)
    task = _task_from_args(args)
    if args.model is None:
        args.model = "paper-reduced" if args.recipe == "stagewise" else "paper"
    if args.recipe is None:
        args.recipe = names.DEFAULT_RECIPES[args.model]
    base = get_recipe(args.recipe)
    split = args.stage_split
    if split is None and base.stage_split and args.steps:  # keep the recipe's proportion of the two stages
        split = max(1, base.stage_split * args.steps // base.steps)
    recipe = base.with_overrides(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                 eval_every=args.eval_every, stage_split=split)
    options = _model_options(args)
    if out is None:
        out = Path("runs") / f"{task.graph.name}-s{task.vocab_size}-t{task.seq_len}-{args.model}-seed{args.seed}"
    interventions = {"ablate": args.ablate, "clamp": args.clamp, "freeze": args.freeze}
    config = make_config(task, args.model, recipe, args.seed, options, forward=args.forward,
                         interventions={k: v for k, v in interventions.items() if v}, guard=not args.no_guard)
    return _train(config, out, resume=False, probes=not args.no_probes, quiet=args.quiet)


def _train(config, out: Path, resume: bool, probes: bool, quiet: bool, steps: int | None = None,
           lr: float | None = None) -> int:
    from interp_causal.probing import default_callback, mechanism_lines
    from interp_causal.training import TrainingDiverged, train_run

    try:
        summary = train_run(config, out, resume=resume, steps=steps, callbacks=default_callback if probes else (),
                            progress=False if quiet else None, lr=lr)
    except TrainingDiverged as exc:
        print(f"interp-causal train: stopped: {exc} (run directory {out}; --no-guard trains on regardless)",
              file=sys.stderr)
        return 3
    _print_summary(summary, out, mechanism_lines(summary.get("mechanisms")))
    return 0


def _model_options(args) -> dict:
    """The preset's options from --layers, --heads, --d-model, --mlp, --layernorm, --positional,
    refused where they do not apply (the model itself checks the rest: divisibility, rotary width)."""
    if args.layers is not None and args.layers < 1:
        raise ValueError(f"layers: expected at least 1 layer, got {args.layers}")
    if args.d_model is not None and args.d_model < 1:
        raise ValueError(f"d_model: expected a positive width, got {args.d_model}")
    heads = None if args.heads is None else list(args.heads)
    if args.model.startswith("paper"):
        given = [f"--{k.replace('_', '-')}" for k in ("d_model", "mlp", "layernorm", "positional")
                 if getattr(args, k) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: the paper models' width and blocks are set by their layout; "
                             "they take --layers and --heads")
        if args.model == "paper-reduced" and (args.layers not in (None, 2) or heads not in (None, [1, 1])):
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


def _print_summary(summary: dict, out: Path, mechanism_lines: list[str]) -> None:
    print(f"run directory   {out}")
    print(f"steps           {summary['steps']}  ({summary['seconds']:.1f} s training, {summary['wall_s']:.1f} s in all)")
    print(f"final test loss {summary['final_test_loss']:.4f}")
    print(f"Bayes loss      {summary['bayes_loss']:.4f}")
    print(f"gap             {summary['gap']:+.4f}  ({summary['gap_pct']:+.2f}% of Bayes)")
    for line in summary.get("interventions", []):
        print(f"intervention    {line}")
    if summary.get("stage_split"):
        print(f"stage-wise      stage 2 from step {summary['stage_split']}")
    for line in mechanism_lines:
        print(line)


def cmd_probe(args) -> int:
    from interp_causal.probing import probe_path

    result = probe_path(Path(args.path), args.out, args.batch_size, args.seed, args.seq_len,
                        progress=False if args.quiet else None)
    print(json.dumps(result, indent=2))
    return 0


def cmd_reproduce(args) -> int:
    from interp_causal.experiments import reproduce
    from interp_causal.report.tables import table

    out = reproduce(args.experiment, args.profile, args.out, args.graph, progress=False if args.quiet else None)
    print(table(out["rows"]))
    print(f"{out['experiment']} ({out['profile']}): {out['wall_s']} s; report in "
          f"{args.out or 'runs/reproduce/' + out['experiment'] + '-' + out['profile']}/report.md")
    return 0


def cmd_report(args) -> int:
    from interp_causal.report import render_run

    from interp_causal.training import RunDir

    run = RunDir(args.run_dir)
    numbers = render_run(run.path)
    print(f"wrote {run.report} and {', '.join(numbers['figures'])} in {run.figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
