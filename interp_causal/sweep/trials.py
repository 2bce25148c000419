"""Trials: ordinary runs trained in parallel as Ray tasks, on this machine or a cluster.

    results = run_trials([Trial("seed-0", config, Path("runs/s/trials/seed-0")), ...], cpus_per_trial=1)

Ray core tasks, not Ray Tune: a trial is one function call that trains a run directory, so a task
is the whole abstraction; Tune would add its own trial directories, result logging and a pyarrow
dependency around a loop that ``train_run`` already owns (checkpoints, resume, logs).

Fault tolerance comes from the run directory: a trial whose worker dies (``kill -9``, a lost node)
is retried by Ray (``max_retries``) and resumes from its last checkpoint, which continues bit for
bit; a trial whose ``summary.json`` exists is done and is not sent again. Each trial sets torch's
threads to its CPUs, so that the trials Ray packs onto a node never oversubscribe it.

The run directories must be on storage every node sees (one machine, or a shared filesystem).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from interp_causal.names import ENGINES
from interp_causal.training.run_dir import RunDir

RAY_HINT = "sweeps run on Ray, which is not installed: pip install 'interp-causal[sweep]'"
MAX_RETRIES = 3  # times Ray re-runs a trial whose worker died; each retry resumes from the checkpoint


class MissingExtra(RuntimeError):
    """An optional dependency is not installed; the message names the extra to install."""


def require_ray():
    try:
        import ray
    except ImportError:
        raise MissingExtra(RAY_HINT) from None
    return ray


@dataclass
class Trial:
    """One run of a sweep: its name, its run config, where it writes, and its grid values (text)."""

    name: str
    config: dict
    run_dir: Path
    values: dict = field(default_factory=dict)

    def state(self) -> str:
        """``done`` (summary.json written), ``partial`` (a checkpoint to resume) or ``new``. Refuses a
        directory that holds another config: a sweep never overwrites a run it did not make."""
        run = RunDir(self.run_dir)
        if run.config.is_file() and run.read_config() != json.loads(json.dumps(self.config)):
            raise ValueError(f"out: {run.path} holds a run of another config than trial {self.name}; "
                             "choose another --out for a different sweep")
        if run.summary.is_file():
            return "done"
        return "partial" if run.holds_run() else "new"


def train_trial(config: dict, run_dir: str, threads: int, probes: bool = True) -> dict:
    """Train (or resume) one trial's run directory with ``threads`` torch threads; write its
    ``trial.json`` (node, host, pid, threads, wall time) and return it with the run's summary."""
    import torch

    from interp_causal.probing import default_callback
    from interp_causal.training import TrainingDiverged, train_run

    torch.set_num_threads(threads)
    run, started = RunDir(run_dir), time.perf_counter()
    resumed = run.holds_run()  # a retried trial: its worker died after a checkpoint
    try:
        summary = train_run(None if resumed else config, run.path, resume=resumed,
                            callbacks=default_callback if probes else (), progress=False)
    except TrainingDiverged:  # the guard stopped it: its summary says so; the sweep goes on
        summary = run.read_summary()
    info = {"node": _node_id(), "host": socket.gethostname(), "pid": os.getpid(), "threads": threads,
            "wall_s": round(time.perf_counter() - started, 2), "resumed": resumed}
    run.write_trial(info)
    return {**info, "summary": summary}


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return "local"


def run_trials(trials: Sequence[Trial], cpus_per_trial: int | None = None, address: str | None = None,
               probes: bool = True, progress: bool | None = None, engine: str = "ray",
               on_result: Callable[[Trial, dict], None] | None = None,
               on_start: Callable[[], None] | None = None) -> dict[str, dict]:
    """Train every trial that is not done; return ``{name: result}`` (``train_trial``'s dict, or
    ``{"error": message}`` for a trial that failed). ``engine="ray"`` runs them as Ray tasks
    (connecting to ``address`` or ``RAY_ADDRESS``, else starting an embedded cluster; a session
    already open is used as is); ``"local"`` trains them here one after another; ``"stacked"``
    trains them here as one computation where they can (two-layer paper models of one layout and
    batch size: :mod:`interp_causal.training.stacked`), one after another where not. ``on_start`` is
    called once the cluster is reached, before the first trial; ``on_result`` after each."""
    if engine not in ENGINES:
        raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")
    if cpus_per_trial is not None and (isinstance(cpus_per_trial, bool) or not isinstance(cpus_per_trial, int)
                                       or cpus_per_trial < 1):
        raise ValueError(f"cpus_per_trial: expected a positive int, got {cpus_per_trial!r}")
    todo = [t for t in trials if t.state() != "done"]
    if not todo:
        return {}
    if engine == "local":
        return _run_local(todo, cpus_per_trial, probes, progress, on_result, on_start)
    if engine == "stacked":
        return _run_stacked(todo, cpus_per_trial, probes, progress, on_result, on_start)
    return _run_ray(todo, len(trials) - len(todo), len(trials), cpus_per_trial, address, probes, progress, on_result,
                    on_start)


def _run_local(todo, cpus_per_trial, probes, progress, on_result, on_start) -> dict[str, dict]:
    import torch
    from tqdm.auto import tqdm

    before, results = torch.get_num_threads(), {}
    if on_start:
        on_start()
    try:
        for trial in tqdm(todo, desc="trials", unit="trial", disable=None if progress is None else not progress):
            results[trial.name] = train_trial(trial.config, str(trial.run_dir), cpus_per_trial or before, probes)
            if on_result:
                on_result(trial, results[trial.name])
    finally:
        torch.set_num_threads(before)
    return results


def _run_stacked(todo, cpus_per_trial, probes, progress, on_result, on_start) -> dict[str, dict]:
    """The trials in groups that step together (:func:`~interp_causal.training.stacked.stack_key`,
    at most ``MAX_STACK`` each), each group one stacked computation with ``cpus_per_trial`` threads.
    By default (``cpus_per_trial=None``) the trials are split into as many parts as torch has
    threads, each part trained stacked in its own process at one thread: the whole step runs in
    parallel that way, sampling and optimiser included, where threads would share only the
    forward and backward pass (Fig. 9's 20 trees on 2 cores: 47 ms per step of all 20 on 2
    processes against 79-85 ms on 2 threads, measured in the steady state; each process takes
    about 8 s to start)."""
    import torch

    parts = min(torch.get_num_threads(), len(todo)) if cpus_per_trial is None else 1
    if parts > 1:
        return _run_stacked_in_processes(todo, parts, probes, progress, on_result, on_start)
    from interp_causal.probing import default_callback
    from interp_causal.training import TrainingDiverged, attach_callbacks, resume_run, start_run
    from interp_causal.training.stacked import MAX_STACK, fit_stacked, stack_key

    before, results = torch.get_num_threads(), {}
    threads = cpus_per_trial or before
    torch.set_num_threads(threads)
    try:
        if on_start:
            on_start()
        groups: dict = {}
        for trial in todo:
            run = RunDir(trial.run_dir)
            resumed = run.holds_run()
            trainer = resume_run(run.path, progress=False) if resumed else start_run(trial.config, run.path, progress=False)
            attach_callbacks(trainer, default_callback if probes else ())
            key = stack_key(trainer)
            key = ("alone", trial.name) if key is None else key
            while len(groups.get(key, ())) >= MAX_STACK:  # full: the next group of this layout
                key = (*key, "more")
            groups.setdefault(key, []).append((trial, trainer, resumed))
        for key, group in groups.items():
            started = time.perf_counter()
            if key[0] == "alone":
                try:
                    group[0][1].fit()
                except TrainingDiverged:  # the guard stopped it: its summary says so; the sweep goes on
                    pass
            else:
                fit_stacked([trainer for _, trainer, _ in group], progress=progress)  # likewise
            wall = round(time.perf_counter() - started, 2)
            for trial, trainer, resumed in group:
                info = {"node": _node_id(), "host": socket.gethostname(), "pid": os.getpid(), "threads": threads,
                        "wall_s": wall, "resumed": resumed, "stacked": len(group)}
                trainer.run.write_trial(info)
                results[trial.name] = {**info, "summary": trainer.run.read_summary()}
                if on_result:
                    on_result(trial, results[trial.name])
            group.clear()  # done: its trainers' data (a pool, the test set) can go
    finally:
        torch.set_num_threads(before)
    return results


def _run_stacked_in_processes(todo, parts, probes, progress, on_result, on_start) -> dict[str, dict]:
    """``todo`` dealt into ``parts`` shares, each trained stacked at one torch thread by its own
    ``python -m interp_causal.sweep.stacked_part`` process (a fresh interpreter: no fork of a
    threaded torch, and no re-import of the caller's ``__main__``, which multiprocessing's spawn
    would need guarded). The first share shows its progress bar; the others run at its pace."""
    import subprocess
    import sys
    import tempfile

    if on_start:
        on_start()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="interp-causal-stacked-") as tmp:
        procs = []
        try:
            for i in range(parts):
                share = list(todo[i::parts])
                spec, out = Path(tmp) / f"part-{i}.json", Path(tmp) / f"part-{i}.out.json"
                spec.write_text(json.dumps({
                    "trials": [{"name": t.name, "config": t.config, "run_dir": str(Path(t.run_dir).resolve()),
                                "values": t.values} for t in share],
                    "probes": probes, "progress": progress if i == 0 else False}))
                command = [sys.executable, "-m", "interp_causal.sweep.stacked_part", str(spec), str(out)]
                procs.append((share, out, subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"})))
            for share, out, proc in procs:
                code = proc.wait()
                done = json.loads(out.read_text()) if out.is_file() else {}
                for trial in share:
                    results[trial.name] = done.get(trial.name) or {
                        "error": f"the process training it exited with code {code} before it reported"}
                    if on_result:
                        on_result(trial, results[trial.name])
        except BaseException:  # interrupted: stop the others; each trial keeps its last checkpoint
            for _, _, proc in procs:
                proc.kill()
            raise
    return results


def _run_ray(todo, done, total, cpus_per_trial, address, probes, progress, on_result, on_start) -> dict[str, dict]:
    from tqdm.auto import tqdm

    ray = require_ray()
    own = not ray.is_initialized()
    if own:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    refs: dict = {}
    try:
        cpus = _cpus_per_trial(ray, cpus_per_trial, len(todo))
        if on_start:
            on_start()
        task = ray.remote(num_cpus=cpus, max_retries=MAX_RETRIES)(train_trial)
        refs = {task.remote(t.config, str(Path(t.run_dir).resolve()), cpus, probes): t for t in todo}
        results: dict[str, dict] = {}
        with tqdm(total=total, initial=done, desc="trials", unit="trial",
                  disable=None if progress is None else not progress) as bar:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                trial = refs.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except (ray.exceptions.RayError, OSError) as exc:  # the trial's own error, or retries used up
                    result = {"error": _one_line(exc)}
                results[trial.name] = result
                bar.update(1)
                if on_result:
                    on_result(trial, result)
        return results
    except BaseException:
        for ref in refs:  # interrupted: stop the workers; each trial keeps its last checkpoint
            ray.cancel(ref, force=True)
        raise
    finally:
        if own:
            ray.shutdown()


def _cpus_per_trial(ray, given: int | None, n: int) -> int:
    """``given``, or the most CPUs that still let every trial run at once without oversubscribing
    a node (one per trial when there are more trials than CPUs)."""
    nodes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]
    largest, total = int(max(nodes, default=1)), int(sum(nodes))
    if given is not None:
        if given > largest:
            raise ValueError(f"cpus_per_trial: {given}, but the largest node has {largest} CPUs")
        return given
    return max(1, min(largest, total // max(1, n)))


def _one_line(exc: BaseException) -> str:
    """A failed trial in one line: the trial's own exception (a ``RayTaskError``'s ``cause``), or
    Ray's (a worker that died more than ``MAX_RETRIES`` times)."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"
