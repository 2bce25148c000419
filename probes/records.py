"""Tidy probe records: ``probe, layer, head, metric, value`` plus optional extras, and their containers.

A record is one number about one (layer, head) or one layer (``head=None``) or the whole model
(``layer=None``). ``extra`` carries per-position arrays and counts as plain lists and numbers, so
a record is always one JSON line. NaN becomes ``null`` in JSON.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from probes.files import append_jsonl, jsonl_text

FIELDS = ("probe", "layer", "head", "metric", "value")


@dataclass
class Record:
    """One measurement. ``extra`` keys are flattened beside the fields in dicts, frames and JSON."""

    probe: str
    layer: int | None
    head: int | None
    metric: str
    value: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        clash = set(self.extra) & set(FIELDS)
        if clash:
            raise ValueError(f"Record.extra: keys {sorted(clash)} would overwrite the record's fields")
        return {"probe": self.probe, "layer": self.layer, "head": self.head, "metric": self.metric,
                "value": float(self.value), **self.extra}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> "Record":
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise ValueError(f"row: missing record fields {missing}; got keys {sorted(row)}")
        value = row["value"]
        return cls(row["probe"], row["layer"], row["head"], row["metric"],
                   float("nan") if value is None else float(value),
                   {k: v for k, v in row.items() if k not in FIELDS})


RecordLike = Union[Record, Mapping[str, Any]]


def as_dicts(records: Iterable[RecordLike]) -> list[dict[str, Any]]:
    """Records or row dicts as row dicts."""
    return [r.to_dict() if isinstance(r, Record) else dict(r) for r in records]


def jsonl_lines(records: Iterable[RecordLike], **fields: Any) -> str:
    """Records as JSON lines (one ``\\n``-terminated line each), with ``fields`` added to every line."""
    return jsonl_text({**row, **fields} for row in as_dicts(records))


class ProbeResult:
    """The records of one suite run, with conversions and look-ups."""

    def __init__(self, records: Iterable[Record]):
        self.records: list[Record] = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __repr__(self) -> str:
        probes = sorted({r.probe for r in self.records})
        return f"ProbeResult({len(self.records)} records from {probes})"

    def to_dicts(self) -> list[dict[str, Any]]:
        return as_dicts(self.records)

    def to_frame(self):
        """A pandas DataFrame, one row per record, extras as extra columns."""
        import pandas as pd

        frame = pd.DataFrame(self.to_dicts(), columns=None if self.records else list(FIELDS))
        # Nullable ints: a model-level record (layer None) must not turn every layer into a float.
        return frame.astype({"layer": "Int64", "head": "Int64"})

    def to_jsonl(self, path_or_file: str | os.PathLike | io.TextIOBase, **fields: Any) -> None:
        """Write JSON lines to a path (appending) or an open text file; ``fields`` (e.g. ``step=10``) go on every line."""
        text = jsonl_lines(self.records, **fields)
        if isinstance(path_or_file, (str, os.PathLike)):
            append_jsonl(Path(path_or_file), text)
        elif hasattr(path_or_file, "write"):
            path_or_file.write(text)
        else:
            raise TypeError(f"path_or_file: expected a path or a writable text file, got {type(path_or_file).__name__}")

    def select(self, probe: str | None = None, metric: str | None = None, layer: int | None = None,
               head: int | None = None) -> list[Record]:
        """Records matching every given field."""
        return [r for r in self.records
                if (probe is None or r.probe == probe) and (metric is None or r.metric == metric)
                and (layer is None or r.layer == layer) and (head is None or r.head == head)]

    def value(self, probe: str, metric: str, layer: int | None = None, head: int | None = None) -> float:
        """The value of the one record matching exactly (``None`` matches ``None``)."""
        hits = [r for r in self.records if (r.probe, r.metric, r.layer, r.head) == (probe, metric, layer, head)]
        if len(hits) != 1:
            raise KeyError(f"expected one record ({probe}, {metric}, layer={layer}, head={head}), found {len(hits)}")
        return hits[0].value

    def best(self, probe: str, metric: str, largest: bool = True, layer: int | None = None) -> Record:
        """The record with the largest (or smallest) value of ``metric``; NaN values never win."""
        hits = [r for r in self.select(probe, metric, layer) if not math.isnan(r.value)]
        if not hits:
            have = sorted({(r.probe, r.metric) for r in self.records})
            raise KeyError(f"no records for probe={probe!r}, metric={metric!r}; have {have}")
        return (max if largest else min)(hits, key=lambda r: r.value)

