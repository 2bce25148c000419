"""``python -m interp_causal.sweep.stacked_part SPEC OUT``: one process's share of a stacked sweep
(:func:`interp_causal.sweep.trials.run_trials` with ``engine="stacked"``, split over processes).

``SPEC`` (JSON) names the trials, whether to probe and whether to show progress; the share trains
stacked at one torch thread, and ``{trial name: result}`` is written to ``OUT`` (a temporary file,
then renamed). A share that fails reports the error for each of its trials, as the other engines do.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from interp_causal.sweep.trials import Trial, _one_line, _run_stacked

    spec_path, out = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text())
    trials = [Trial(t["name"], t["config"], Path(t["run_dir"]), t["values"]) for t in spec["trials"]]
    try:
        results = _run_stacked(trials, 1, spec["probes"], spec["progress"], None, None)
    except Exception as exc:  # noqa: BLE001 - reported per trial
        results = {t.name: {"error": _one_line(exc)} for t in trials}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
