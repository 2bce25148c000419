"""The README's Python, pasted as a new user would: every block, in order, in a fresh directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_to_run():
    assert len(python_blocks()) >= 2


def test_every_python_block_of_the_readme_runs_in_a_fresh_directory(tmp_path):
    code = "\n".join(python_blocks())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / "example" / "summary.json").is_file()  # the trainer made its directory
    model_loss, bayes_loss = (float(x) for x in re.search(r"test loss ([\d.]+), Bayes ([\d.]+)", done.stdout).groups())
    assert 0 < bayes_loss <= model_loss < 1.05 * bayes_loss, done.stdout  # the example trains to near Bayes
