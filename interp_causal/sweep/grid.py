"""A sweep's grid: ``train`` options, each with a list of values, and the trials they span.

    grid = Grid.parse(["seed=0-3", "vocab=5,10", "graph=chain,random"])   # or Grid.from_toml(path)
    grid.trials()     # 16 dicts {option: value}, the last key varying fastest
    grid.name(trial)  # "seed-0_vocab-5_graph-chain": the trial's run directory under the sweep

Grid keys are the option names of ``interp-causal train`` (``seq-len`` or ``seq_len``), and each
value goes through that option's own type and choices, so a grid means what ``train`` means.
Torch-free: a bad grid answers at once, before anything is imported or written.

Values on the command line are separated by commas, or by semicolons when a value holds commas
(``heads=1,1;2,1``); ``A-B`` is the integers ``A`` to ``B``; the repeatable options (``ablate``,
``clamp``, ``freeze``) take ``none`` for no intervention and ``+`` between several in one trial.
In a TOML file (``[grid]`` table) a key maps to a list of values, or to one value kept fixed; a
value that is itself a list (heads per layer, several interventions) is a list inside the list.
"""

from __future__ import annotations

import argparse
import itertools
import re
import tomllib
from pathlib import Path

# train options that are not grid keys: where and how a trial writes is the sweep's business
NOT_GRID_KEYS = ("out", "resume", "quiet", "no_probes", "threads")
MAX_TRIALS = 256  # more trials than this need --yes (or --max-trials)


def train_options() -> dict[str, argparse.Action]:
    """``dest -> action`` of every ``train`` option a grid may vary."""
    from interp_causal.train_options import add_task_options, add_training_options

    parser = argparse.ArgumentParser(add_help=False)
    add_task_options(parser)
    add_training_options(parser)
    return {a.dest: a for a in parser._actions if a.dest not in NOT_GRID_KEYS}


def _boolean(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "yes", "1", "on"):
        return True
    if low in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_value(key: str, text: str, action: argparse.Action):
    """One grid value of option ``key`` from its text, by the option's own type and choices."""
    text = text.strip()
    try:
        if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:  # --mlp/--no-mlp, --no-guard
            value = _boolean(text)
        elif isinstance(action, argparse._AppendAction):  # --ablate, --clamp, --freeze: a list per trial
            value = [] if text.lower() == "none" else [v.strip() for v in text.split("+") if v.strip()]
        elif action.type is not None:
            value = action.type(text)
        else:
            value = text
    except (ValueError, argparse.ArgumentTypeError) as exc:
        kind = getattr(action.type, "__name__", "value").replace("_", " ")
        raise ValueError(f"grid: {key}={text!r}: expected a {kind} ({exc})") from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"grid: {key}={text!r}: expected one of {', '.join(map(str, action.choices))}")
    return value


def value_text(value) -> str:
    """The canonical text of a grid value: what ``sweep.csv`` holds and trial names are made of."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, list):
        return "+".join(value) if value else "none"
    return str(value)


def _split(key: str, text: str, action: argparse.Action) -> list[str]:
    parts = [p for p in text.split(";" if ";" in text else ",")]
    out: list[str] = []
    for part in parts:
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", part)
        if m and action.type is not None and getattr(action.type, "__name__", "") in ("int", "positive_int"):
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f"grid: {key}={part.strip()}: a range runs from low to high")
            out += [str(v) for v in range(lo, hi + 1)]
        else:
            out.append(part)
    return out


class Grid:
    """An ordered mapping ``option -> [values]``; :meth:`trials` is their product."""

    def __init__(self, values: dict[str, list]):
        self.values = values

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def parse(cls, items: list[str]) -> "Grid":
        """From ``--grid KEY=VALUES`` items."""
        texts: dict[str, list[str]] = {}
        for item in items:
            key, sep, text = item.partition("=")
            if not sep:
                raise ValueError(f"grid: expected KEY=VALUES such as seed=0-7 or vocab=5,10, got {item!r}")
            texts[cls._key(key, texts)] = text
        actions = train_options()
        return cls({k: cls._values(k, _split(k, t, actions[k]) if t.strip() else [], actions[k])
                    for k, t in texts.items()})

    @classmethod
    def from_toml(cls, path: str | Path) -> "Grid":
        """From the ``[grid]`` table of a TOML file: ``key = [values]`` or ``key = value`` (fixed)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"grid: no TOML file {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"grid: {path} is not valid TOML ({exc})") from None
        table = data.get("grid")
        if not isinstance(table, dict):
            raise ValueError(f"grid: {path} has no [grid] table of KEY = [VALUES]")
        actions, out, seen = train_options(), {}, {}
        for raw_key, raw in table.items():
            key = cls._key(raw_key, seen)
            seen[key] = raw
            items = raw if isinstance(raw, list) else [raw]  # a list is always the list of values
            out[key] = cls._values(key, [cls._toml_text(key, v) for v in items], actions[key])
        return cls(out)

    def merge(self, other: "Grid") -> "Grid":
        """This grid with ``other``'s keys added (a key in both is an error)."""
        both = set(self.values) & set(other.values)
        if both:
            raise ValueError(f"grid: {', '.join(sorted(both))} given both in the TOML file and by --grid")
        return Grid({**self.values, **other.values})

    @staticmethod
    def _key(raw: str, seen) -> str:
        key = raw.strip().lstrip("-").replace("-", "_")
        actions = train_options()
        if key not in actions:
            raise ValueError(f"grid: unknown key {raw.strip()!r}; expected one of: "
                             f"{', '.join(k.replace('_', '-') for k in actions)}")
        if key in seen:
            raise ValueError(f"grid: {raw.strip()} is given twice")
        return key

    @staticmethod
    def _values(key: str, texts: list[str], action: argparse.Action) -> list:
        if not texts or all(not t.strip() for t in texts):
            raise ValueError(f"grid: {key.replace('_', '-')} has no values")
        values = [parse_value(key.replace("_", "-"), t, action) for t in texts]
        seen = [value_text(v) for v in values]
        dup = next((t for i, t in enumerate(seen) if t in seen[:i]), None)
        if dup is not None:
            raise ValueError(f"grid: {key.replace('_', '-')} lists {dup} twice")
        return values

    @staticmethod
    def _toml_text(key: str, v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):  # heads [[2, 1], [1, 1]]: per layer; ablate [["0.0", "1.0"], []]: several or none
            return ("," if key == "heads" else "+").join(map(str, v)) if v else "none"
        if isinstance(v, (int, float, str)):
            return str(v)
        raise ValueError(f"grid: {key}={v!r}: expected numbers, strings, booleans or lists of them")

    # ---- trials ---------------------------------------------------------------------------
    @property
    def swept(self) -> list[str]:
        """Keys with more than one value (what names a trial)."""
        return [k for k, v in self.values.items() if len(v) > 1]

    def __len__(self) -> int:
        n = 1
        for v in self.values.values():
            n *= len(v)
        return n

    def trials(self) -> list[dict]:
        keys = list(self.values)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.values[k] for k in keys))]

    def name(self, trial: dict) -> str:
        """The trial's directory name: its swept values, e.g. ``seed-0_vocab-5``."""
        parts = [f"{k.replace('_', '-')}-{re.sub(r'[^A-Za-z0-9.]+', '-', value_text(trial[k])).strip('-')}"
                 for k in self.swept]
        return "_".join(parts) or "trial"

    def to_dict(self) -> dict[str, list[str]]:
        """``{key: [value texts]}``: what ``sweep.json`` records (a sweep started again must match it)."""
        return {k: [value_text(v) for v in vs] for k, vs in self.values.items()}
