"""``interp-causal``: demo, train, probe. Heavy imports (torch, TransformerLens) happen inside
the commands so that ``--help`` answers at once."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from interp_causal import names
from interp_causal.sweep.grid import MAX_TRIALS
from interp_causal.names import ENGINES
from interp_causal.train_options import add_task_options, add_training_options, positive_int, train_config


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
    add_task_options(train)
    add_training_options(train)
    train.add_argument("--out", default=None, help="run directory (default: runs/GRAPH-sS-tT-MODEL-seedN)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out up to --steps in total")

    probe = sub.add_parser("probe", help="probe a run, a Hugging Face model directory or a directory of checkpoints")
    probe.add_argument("path", help="a run directory (train, demo), a local Hugging Face model directory "
                                    "(config.json + safetensors), or a directory of them (checkpoint-*/, step*/)")
    probe.add_argument("--batch-size", type=positive_int, default=None,
                       help="probe batch size (default: 512 for a run, 64 for Hugging Face checkpoints)")
    probe.add_argument("--seq-len", type=positive_int, default=None,
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

    sweep = sub.add_parser("sweep", help="train a grid of runs (seeds, graphs, sizes, recipes...) in parallel on Ray, "
                                         "on this machine or a cluster")
    sweep.add_argument("grid_file", nargs="?", default=None,
                       help="a TOML file whose [grid] table maps train options to lists of values (or one value)")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=VALUES",
                       help="a train option and its values: seed=0-7, vocab=5,10,20, graph=chain,random, "
                            "heads=1,1;2,1 (';' when values hold commas), ablate=none;0.0; repeatable")
    sweep.add_argument("--out", default=None,
                       help="sweep directory; the same command again finishes what is missing (default: runs/sweep-KEYS)")
    sweep.add_argument("--address", default=None,
                       help="Ray cluster to run on (default: $RAY_ADDRESS, else an embedded cluster on this machine)")
    sweep.add_argument("--engine", choices=ENGINES, default="ray",
                       help="ray: trials in parallel on Ray (default); stacked: on this machine, the trials that "
                            "share a layout trained as one computation (two-layer paper models; without --cpus-per-trial "
                            "in one process per torch thread, each at one thread), the rest one by one; "
                            "local: here, one after another")
    sweep.add_argument("--cpus-per-trial", type=positive_int, default=None,
                       help="CPUs (and torch threads) per trial (default: the machine's CPUs over the trials, at least 1)")
    sweep.add_argument("--max-trials", type=positive_int, default=MAX_TRIALS,
                       help=f"refuse grids larger than this without --yes (default: {MAX_TRIALS})")
    sweep.add_argument("--yes", action="store_true", help="run a grid larger than --max-trials")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")

    results = sub.add_parser("results", help="write docs/results.md and the README's results table from the "
                                              "reproductions' own JSON")
    results.add_argument("runs", nargs="?", default="runs/reproduce",
                         help="directory of reproductions (default: runs/reproduce); tiny profiles are skipped")
    results.add_argument("--docs", default="docs", help="where results.json and results.md live (default: docs)")
    results.add_argument("--readme", default="README.md", help="README whose results table is rewritten (default: README.md)")

    report = sub.add_parser("report", help="render figures and report.md for a run or sweep directory")
    report.add_argument("run_dir", help="a run directory written by train or demo, or a sweep directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"demo": cmd_demo, "train": cmd_train, "probe": cmd_probe, "reproduce": cmd_reproduce, "results": cmd_results,
                    "sweep": cmd_sweep, "report": cmd_report}
        return commands[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"interp-causal {args.command}: error: {exc}", file=sys.stderr)
        return 2


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
                      lr=args.lr, threads=args.threads)
    config, default_out = train_config(args)
    return _train(config, out or default_out, resume=False, probes=not args.no_probes, quiet=args.quiet,
                  threads=args.threads)


def _train(config, out: Path, resume: bool, probes: bool, quiet: bool, steps: int | None = None,
           lr: float | None = None, threads: int | None = None) -> int:
    import torch

    from interp_causal.probing import default_callback, mechanism_lines
    from interp_causal.training import TrainingDiverged, train_run

    if threads is not None:
        torch.set_num_threads(threads)

    try:
        summary = train_run(config, out, resume=resume, steps=steps, callbacks=default_callback if probes else (),
                            progress=False if quiet else None, lr=lr)
    except TrainingDiverged as exc:
        print(f"interp-causal train: stopped: {exc} (run directory {out}; --no-guard trains on regardless)",
              file=sys.stderr)
        return 3
    _print_summary(summary, out, mechanism_lines(summary.get("mechanisms")))
    return 0


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


def cmd_results(args) -> int:
    from interp_causal.results import RESULTS_MD, write_results

    if not Path(args.runs).is_dir() and not (Path(args.docs) / "results.json").is_file():
        raise ValueError(f"runs: expected a directory of reproductions (interp-causal reproduce NAME --profile paper), "
                         f"got {args.runs!r}, which does not exist")
    results = write_results(args.runs, args.docs, args.readme)
    print(f"{len(results)} reproductions in {Path(args.docs) / RESULTS_MD}; README table in {args.readme}")
    return 0


def cmd_reproduce(args) -> int:
    from interp_causal.experiments import reproduce
    from interp_causal.report.tables import fmt, table

    out = reproduce(args.experiment, args.profile, args.out, args.graph, progress=False if args.quiet else None)
    print(table(out["rows"]))
    for c in out["checks"]:
        verdict = "not measured" if c["passed"] is None else "passed" if c["passed"] else "FAILED"
        print(f"check: {c['claim']}: {fmt(c['value'])} ({c['rule']}): {verdict}")
    print(f"{out['experiment']} ({out['profile']}): {out['wall_s']} s; report in "
          f"{args.out or 'runs/reproduce/' + out['experiment'] + '-' + out['profile']}/report.md")
    return 0


def cmd_sweep(args) -> int:
    from tqdm.auto import tqdm

    from interp_causal.sweep.grid import Grid

    if args.grid_file is None and not args.grid:
        raise ValueError("grid: give a TOML file with a [grid] table, or --grid KEY=VALUES (e.g. --grid seed=0-3)")
    grid = Grid.parse(args.grid)
    if args.grid_file is not None:
        grid = Grid.from_toml(args.grid_file).merge(grid)
    out = Path(args.out) if args.out else Path("runs") / ("sweep-" + ("_".join(grid.swept) or "trial"))
    from interp_causal.sweep import MissingExtra, run_sweep  # torch: after the grid is known to be sound

    try:
        result = run_sweep(grid, out, args.address, args.cpus_per_trial, args.max_trials, args.yes,
                           progress=False if args.quiet else None, echo=tqdm.write, engine=args.engine)
    except MissingExtra as exc:
        print(f"interp-causal sweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interp-causal sweep: interrupted; every trial keeps its last checkpoint: the same command "
              f"finishes the sweep in {out}", file=sys.stderr)
        return 130
    if not result["trained"]:
        print(f"all {result['trials']} trials in {out} are done: nothing to train (sweep.csv and figures written again)")
    for name, error in result["failed"].items():
        print(f"interp-causal sweep: trial {name} failed: {error}", file=sys.stderr)
    print(f"sweep directory {out}: {result['trials']} trials, {result['trained']} trained now; "
          f"{out / 'sweep.csv'}, {out / 'report.md'}" + (f", figures/{', figures/'.join(result['figures'])}"
                                                          if result["figures"] else ""))
    if result["failed"]:
        print(f"interp-causal sweep: {len(result['failed'])} trials failed; the same command again retries them",
              file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from interp_causal.report import render_run
    from interp_causal.sweep.sweep import SweepDir
    from interp_causal.training import RunDir

    sweep = SweepDir(args.run_dir)
    if sweep.holds_sweep():
        from interp_causal.sweep import render_sweep

        result = render_sweep(sweep.path)
        print(f"wrote {sweep.table} ({len(result['rows'])} trials), {sweep.report}"
              + (f" and {', '.join(result['figures'])} in {sweep.figures}" if result["figures"] else ""))
        return 0
    run = RunDir(args.run_dir)
    numbers = render_run(run.path)
    print(f"wrote {run.report} and {', '.join(numbers['figures'])} in {run.figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
