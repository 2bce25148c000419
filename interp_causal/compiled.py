"""The package's C sources, compiled on first use by the machine's C compiler and cached.

Two hot loops are written in C: the structured path's two-layer model (``models/paper_kernel.c``,
loaded by :mod:`interp_causal.models.native`) and the task samplers (``tasks/sampler.c``); both
include ``vector_math.h``. Each is built once per machine and source into ``$INTERP_CAUSAL_CACHE``
(default ``~/.cache/interp-causal``), written to a temporary file and renamed, so concurrent
processes never load a half-written one. Where there is no C compiler, or with
``INTERP_CAUSAL_NATIVE=0``, :func:`library` is None and the callers keep their torch code, which
computes the same thing (the tests run both).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

# the sources write their vectors out (GCC's and clang's vector extensions); -march=native: AVX2
# and FMA where the CPU has them (the cache key names the CPU); no -ffast-math, so inf and NaN
# propagate as in torch
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared")
# tried first: OpenMP regions then run on torch's own threads (the library binds to the libgomp
# torch has loaded, the same soname); a compiler without OpenMP builds with FLAGS alone
OPENMP_FLAGS = ("-fopenmp",)
ENV_SWITCH = "INTERP_CAUSAL_NATIVE"

_lock = threading.Lock()
_state: dict = {}  # source path -> the loaded library, or None where it cannot be built


def cache_dir() -> Path:
    root = os.environ.get("INTERP_CAUSAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "interp-causal")
    return Path(root) / "kernels"


def library(source: Path, declare: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL | None:
    """The compiled ``source``, its functions' signatures set by ``declare(lib)``; None where it
    cannot be built (a warning says why) or ``INTERP_CAUSAL_NATIVE=0``."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    key = str(source)
    with _lock:
        if key not in _state:
            try:
                lib = _compile(source)
                if lib is not None:
                    declare(lib)
                _state[key] = lib
            except OSError as err:  # no writable cache, a library that does not load
                warnings.warn(f"interp_causal: the compiled {source.name} is unavailable ({err}); "
                              "the torch code runs instead", RuntimeWarning, stacklevel=2)
                _state[key] = None
        return _state[key]


def _compile(source: Path) -> ctypes.CDLL | None:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return None
    from interp_causal.results import cpuinfo_field

    # -march=native: a library built for one CPU may not run on another that shares the cache
    machine = (platform.machine(), cpuinfo_field("model name"), cpuinfo_field("flags"))
    errors: list[str] = []
    for flags in ((*FLAGS, *OPENMP_FLAGS), FLAGS):
        key = hashlib.sha256(_text(source) + repr((compiler, flags, machine)).encode()).hexdigest()[:16]
        target = cache_dir() / f"{source.stem}-{key}.so"
        if target.exists() or _build(compiler, flags, source, target, errors):
            return ctypes.CDLL(str(target))
    warnings.warn(f"interp_causal: compiling {source.name} failed, the torch code runs instead:\n"
                  f"{errors[-1][-2000:]}", RuntimeWarning, stacklevel=4)
    return None


def _text(source: Path) -> bytes:
    """The source with the local headers it includes (``#include "..."``), so that a changed
    header builds a new library."""
    text = source.read_bytes()
    headers = re.findall(rb'^#include "([^"]+)"', text, flags=re.M)
    return text + b"".join(_text((source.parent / h.decode()).resolve()) for h in headers)


def _build(compiler: str, flags: tuple[str, ...], source: Path, target: Path, errors: list[str]) -> bool:
    """Compile to ``target`` through a temporary file (renamed when complete); False, with the
    compiler's message in ``errors``, when it fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *flags, str(source), "-o", tmp], capture_output=True, text=True)
        if done.returncode != 0:
            errors.append(done.stderr)
            return False
        os.replace(tmp, target)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
