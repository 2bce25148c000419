"""When to probe during training: every N steps, log-spaced, explicit steps, and unions of them.

    schedule = every(50) | every(5, start=2000, stop=5000) | at([123])   # denser near a phase change
    step in schedule

A :class:`~probes.callback.ProbeCallback` also always probes step 0 and the final step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable


class Schedule:
    """A set of steps, tested with ``step in schedule``; combine with ``|``."""

    def __init__(self, contains: Callable[[int], bool], description: str):
        self._contains, self.description = contains, description

    def __contains__(self, step: object) -> bool:
        return isinstance(step, int) and step >= 0 and self._contains(step)

    def __or__(self, other: "Schedule") -> "Schedule":
        other = as_schedule(other)
        return Schedule(lambda s: s in self or s in other, f"{self.description} | {other.description}")

    def __repr__(self) -> str:
        return self.description

    def steps(self, stop: int) -> list[int]:
        """The scheduled steps in ``[0, stop]``."""
        return [s for s in range(stop + 1) if s in self]


def every(n: int, start: int = 0, stop: int | None = None) -> Schedule:
    """Steps ``start, start + n, ...`` (below ``stop`` when given)."""
    for name, v in (("n", n), ("start", start)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "n" else 0):
            raise ValueError(f"{name}: expected an int >= {1 if name == 'n' else 0}, got {v!r}")
    return Schedule(
        lambda s: s >= start and (stop is None or s < stop) and (s - start) % n == 0,
        f"every({n}, start={start}, stop={stop})",
    )


def log_spaced(per_decade: int = 10) -> Schedule:
    """Steps ``round(10 ** (k / per_decade))`` for ``k = 0, 1, ...`` (1, 2, 3, 4, 5, 6, 8, 10, 13, ... at 10)."""
    if isinstance(per_decade, bool) or not isinstance(per_decade, int) or per_decade < 1:
        raise ValueError(f"per_decade: expected an int >= 1, got {per_decade!r}")

    def contains(s: int) -> bool:
        if s < 1:
            return False
        k = per_decade * math.log10(s)
        return any(round(10 ** (j / per_decade)) == s for j in (math.floor(k) - 1, math.floor(k), math.ceil(k), math.ceil(k) + 1) if j >= 0)

    return Schedule(contains, f"log_spaced({per_decade})")


def at(steps: Iterable[int]) -> Schedule:
    """Exactly these steps."""
    chosen = set()
    for s in steps:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"steps: expected ints >= 0, got {s!r}")
        chosen.add(s)
    return Schedule(chosen.__contains__, f"at({sorted(chosen)})")


def as_schedule(schedule: object) -> Schedule:
    """A Schedule from a Schedule, an int N (every N steps) or a list of steps."""
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, int) and not isinstance(schedule, bool):
        return every(schedule)
    if isinstance(schedule, Iterable) and not isinstance(schedule, (str, bytes)):
        return at(schedule)
    raise TypeError(f"schedule: expected a Schedule, an int (every N steps) or a list of steps, got {schedule!r}")
