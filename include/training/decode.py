"""Decode a mini-batch of Kafka message values (one CSV row each) into the model's raw input matrix.

The raw matrix holds one float32 slot per numeric or category feature (the number itself, or the category's index)
and two per timestamp (hour of day 0-23, day of week with Monday = 0); :func:`raw_layout` describes the slots and is
stored in the model's :class:`include.training.model.SchemaEncoding` layer, which turns them into the scaled /
one-hot features. So this module only parses and checks; it never scales or encodes, and it never raises for bad
data: an undecodable message is reported in ``Decoded.errors`` with its reason and left out.

What a field means is decided by the one value parser, :mod:`include.schema.values`, exactly as ingest validation
decides it: every column is checked (non-feature ones too), and a refused message gets the reason ingest would
have quarantined its row with (``field 'x' = '25' is above max 19``, the first bad column in CSV order;
``expected 6 fields, found 7``). Parsing is vectorised over the whole mini-batch, because a trainer that keeps up
with a topic must decode hundreds of thousands of rows a second: the values are joined into one buffer, field
boundaries found with numpy and the common forms read by the fast paths of :mod:`include.schema.columns`, which
only accept what they prove valid; every other field goes to the scalar parser. Hour of day and day of week come
from the parsed epoch milliseconds, whichever path read them.

Message framing, which is not about values (a byte-order mark, line ends, tombstones, CSV quoting), is
:mod:`include.training.framing`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from include.schema import Column, CsvSchema
from include.schema.columns import PAD, CategoryReader, NumberReader, read_timestamps
from include.schema.values import FieldInvalid, Parser, field_count_reason, field_reason, parser_for
from include.training.framing import PlainRows, frame

_SEP, _NL = 44, 10
_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 86_400_000
_THURSDAY = 3  # 1970-01-01, day 0 of epoch time, with Monday = 0

RawSlot = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True)
class Decoded:
    """A decoded mini-batch.

    Attributes:
        x: float32 ``(n_good, raw_width)`` raw feature matrix, rows in message order.
        y: float32 ``(n_good,)`` labels (0 or 1).
        good: int64 indices (into the input list) of the decoded messages, ascending.
        errors: ``(message index, reason)`` for every message left out, ascending by index.
    """

    x: np.ndarray
    y: np.ndarray
    good: np.ndarray
    errors: list[tuple[int, str]]


def raw_layout(schema: CsvSchema) -> list[RawSlot]:
    """Describe the raw matrix's slots, in order.

    Returns:
        ``(name, kind, params)`` per slot: ``numeric`` with ``{"min", "max"}``, ``category`` with
        ``{"categories": [...]}``, and for a timestamp column ``<name>.hour`` (kind ``hour``) then ``<name>.dow``
        (kind ``dow``, Monday = 0), both with ``{}``. Params are JSON-able: the model stores the layout.
    """
    return [(name, kind, dict(params)) for name, kind, params, _ in _plan(schema).slots]


def raw_width(schema: CsvSchema) -> int:
    """Number of slots (columns) of the raw matrix."""
    return len(_plan(schema).slots)


def decode_batch(schema: CsvSchema, values: Sequence[bytes | bytearray | str | None]) -> Decoded:
    """Decode message values (each one CSV row in the schema's column order, no header) into raw features.

    Args:
        schema: The declared schema.
        values: The messages' values, in stream order.

    Returns:
        The :class:`Decoded` rows; bad messages are listed in ``errors`` and left out, never raised.
    """
    plan = _plan(schema)
    errors: dict[int, str] = {}
    plain, quoted = frame(values, errors)
    cells = _read_plain(plan, plain, errors)
    if quoted:
        cells = cells.merge(_read_quoted(plan, quoted, errors))
    return _assemble(plan, cells, errors)


# --- the plan: what to read from which column, computed once per schema ------------------------------------------

_PLANS: dict[int, tuple[CsvSchema, "_Plan"]] = {}


@dataclass(frozen=True)
class _Plan:
    """What to read from which CSV column and where it goes in the raw matrix."""

    columns: tuple[Column, ...]
    parsers: tuple[Parser, ...]  # the scalar rule of each column
    slots: tuple[tuple[str, str, dict[str, Any], int], ...]  # raw slots with the CSV column each comes from
    where: tuple[tuple[str, int], ...]  # per CSV column: ("number" | "category" | "time", position among those)
    numeric: tuple[int, ...]  # CSV columns of type int or float, ascending
    numbers: NumberReader
    categories: tuple[tuple[int, CategoryReader], ...]  # (CSV column, reader)
    timestamps: tuple[int, ...]  # CSV columns
    label: int  # the label's position in ``numeric``
    number_slots: np.ndarray  # raw slots filled from the numbers ...
    number_sources: np.ndarray  # ... and their positions in ``numeric``
    category_slots: tuple[tuple[int, int], ...]  # (raw slot, position in ``categories``)
    time_slots: tuple[tuple[int, int, int], ...]  # (hour slot, day-of-week slot, position in ``timestamps``)

    @property
    def ncols(self) -> int:
        return len(self.columns)


def _plan(schema: CsvSchema) -> _Plan:
    # Keyed by identity (hashing a schema on every mini-batch costs more than decoding it); the schema object
    # is kept in the entry, so an id is never reused while cached.
    hit = _PLANS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    plan = _make_plan(schema)
    if len(_PLANS) > 64:
        _PLANS.clear()
    _PLANS[id(schema)] = (schema, plan)
    return plan


def _make_plan(schema: CsvSchema) -> _Plan:
    columns = schema.columns
    by_type: dict[str, list[int]] = {"number": [], "category": [], "time": []}
    where = []
    for ci, col in enumerate(columns):
        kind = {"int": "number", "float": "number", "category": "category", "timestamp": "time"}[col.type]
        where.append((kind, len(by_type[kind])))
        by_type[kind].append(ci)
    slots: list[tuple[str, str, dict[str, Any], int]] = []
    number_slots, category_slots, time_slots = [], [], []
    for col in schema.feature_columns:
        ci = schema.index(col.name)
        kind, k = where[ci]
        if kind == "number":
            number_slots.append((len(slots), k))
            slots.append((col.name, "numeric", {"min": float(col.min), "max": float(col.max)}, ci))
        elif kind == "category":
            category_slots.append((len(slots), k))
            slots.append((col.name, "category", {"categories": list(col.categories)}, ci))
        else:
            time_slots.append((len(slots), len(slots) + 1, k))
            slots.append((f"{col.name}.hour", "hour", {}, ci))
            slots.append((f"{col.name}.dow", "dow", {}, ci))
    return _Plan(
        columns=columns,
        parsers=tuple(parser_for(c) for c in columns),
        slots=tuple(slots),
        where=tuple(where),
        numeric=tuple(by_type["number"]),
        numbers=NumberReader([columns[ci] for ci in by_type["number"]]),
        categories=tuple((ci, CategoryReader(columns[ci])) for ci in by_type["category"]),
        timestamps=tuple(by_type["time"]),
        label=where[schema.label_index][1],
        number_slots=np.array([s for s, _ in number_slots], dtype=np.int64),
        number_sources=np.array([k for _, k in number_slots], dtype=np.int64),
        category_slots=tuple(category_slots),
        time_slots=tuple(time_slots),
    )


# --- parsed values ------------------------------------------------------------------------------------------------


@dataclass
class _Cells:
    """The parsed values of decoded rows, one entry per row in message order."""

    index: np.ndarray  # each row's message index
    numbers: np.ndarray  # float64 (rows, len(plan.numeric))
    categories: list[np.ndarray]  # per category column: int64 category index
    times: list[np.ndarray]  # per timestamp column: int64 epoch ms

    @classmethod
    def empty(cls, plan: _Plan, index: np.ndarray) -> "_Cells":
        m = index.size
        return cls(index, np.zeros((m, len(plan.numeric))), [np.zeros(m, np.int64) for _ in plan.categories],
                   [np.zeros(m, np.int64) for _ in plan.timestamps])

    def column(self, plan: _Plan, ci: int) -> np.ndarray:
        """The (writable) values of CSV column ``ci``."""
        kind, k = plan.where[ci]
        if kind == "number":
            return self.numbers[:, k]
        return self.categories[k] if kind == "category" else self.times[k]

    def take(self, rows: np.ndarray) -> "_Cells":
        return _Cells(self.index[rows], self.numbers[rows], [a[rows] for a in self.categories],
                      [a[rows] for a in self.times])

    def merge(self, other: "_Cells") -> "_Cells":
        """Both sets of rows, in message order."""
        both = _Cells(np.concatenate([self.index, other.index]), np.concatenate([self.numbers, other.numbers]),
                      [np.concatenate(p) for p in zip(self.categories, other.categories)],
                      [np.concatenate(p) for p in zip(self.times, other.times)])
        return both.take(np.argsort(both.index, kind="stable"))


def _settle(plan: _Plan, cells: _Cells, pending: list[tuple[int, np.ndarray]],
            text: Callable[[int, int], str]) -> dict[int, str]:
    """Decide the fields no fast path accepted with their column's scalar parser.

    Args:
        plan: The schema's plan.
        cells: Where accepted values are written.
        pending: ``(CSV column, rows)`` of the fields to decide.
        text: The field string of (row, CSV column).

    Returns:
        Row -> reason of each refused row: its first bad column in CSV order, as the validator reports it (the
        validator stops at that column, so later columns of the row are not looked at).
    """
    bad: dict[int, str] = {}
    for ci, rows in sorted(pending, key=lambda p: p[0]):
        column, parse, target = plan.columns[ci], plan.parsers[ci], cells.column(plan, ci)
        for r in rows.tolist():
            if r in bad:
                continue
            value = text(r, ci)
            try:
                target[r] = parse(value)
            except FieldInvalid as exc:
                bad[r] = field_reason(column, value, exc)
    return bad


def _drop(cells: _Cells, bad: dict[int, str], errors: dict[int, str]) -> _Cells:
    """Report the refused rows under their message index and leave them out."""
    if not bad:
        return cells
    for r, reason in bad.items():
        errors[int(cells.index[r])] = reason
    keep = np.ones(cells.index.size, dtype=bool)
    keep[list(bad)] = False
    return cells.take(keep)


# --- plain rows: vectorised ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fields:
    """Field bounds of plain rows in one buffer: ``buf_bytes[starts[r, c]:ends[r, c]]``."""

    buf: np.ndarray
    buf_bytes: bytes
    starts: np.ndarray
    ends: np.ndarray
    index: np.ndarray

    def text(self, r: int, ci: int) -> str:
        return self.buf_bytes[int(self.starts[r, ci]):int(self.ends[r, ci])].decode("utf-8")


def _read_plain(plan: _Plan, plain: PlainRows, errors: dict[int, str]) -> _Cells:
    fields = _split(plan, plain, errors)
    if fields.index.size == 0:
        return _Cells.empty(plan, fields.index)
    cells, pending = _read_fast(plan, fields)
    return _drop(cells, _settle(plan, cells, pending, fields.text), errors) if pending else cells


def _split(plan: _Plan, plain: PlainRows, errors: dict[int, str]) -> _Fields:
    """Find every field's bounds; rows with the wrong number of fields are reported and left out."""
    if not plain.rows:
        return _Fields(np.zeros(0, np.uint8), b"", np.zeros((0, plan.ncols), np.int64),
                       np.zeros((0, plan.ncols), np.int64), plain.index)
    joined = plain.joined if plain.joined is not None else b"\n".join(plain.rows)
    buf_bytes = b" " * PAD + joined + b"\n"
    buf = np.frombuffer(buf_bytes, dtype=np.uint8)
    ends = np.flatnonzero((buf == _SEP) | (buf == _NL))  # each field's exclusive end (its separator)
    starts = np.empty_like(ends)
    starts[0] = PAD
    starts[1:] = ends[:-1] + 1
    counts = np.diff(np.flatnonzero(buf[ends] == _NL), prepend=-1)  # fields per row (one newline each)
    index = plain.index
    fits = counts == plan.ncols
    if not fits.all():
        for r in np.flatnonzero(~fits).tolist():
            blank = not bytes(plain.rows[r]).decode("utf-8").strip()
            errors[int(index[r])] = "empty message" if blank else field_count_reason(plan.ncols, int(counts[r]))
        per_field = np.repeat(fits, counts)
        starts, ends, index = starts[per_field], ends[per_field], index[fits]
    m = index.size
    return _Fields(buf, buf_bytes, starts.reshape(m, plan.ncols), ends.reshape(m, plan.ncols), index)


def _read_fast(plan: _Plan, fields: _Fields) -> tuple[_Cells, list[tuple[int, np.ndarray]]]:
    """Read every field with the fast paths; return the values and the fields left to the scalar parser."""
    buf, buf_bytes, starts, ends = fields.buf, fields.buf_bytes, fields.starts, fields.ends
    pending: list[tuple[int, np.ndarray]] = []
    if len(plan.numeric) == plan.ncols:
        numbers, accepted = plan.numbers(buf, buf_bytes, starts, ends)
    else:
        sel = list(plan.numeric)
        numbers, accepted = plan.numbers(buf, buf_bytes, starts[:, sel], ends[:, sel])
    if not accepted.all():
        pending += [(ci, np.flatnonzero(~accepted[:, k])) for k, ci in enumerate(plan.numeric)]
    categories = []
    for ci, reader in plan.categories:
        index, accepted = reader(buf, buf_bytes, starts[:, ci], ends[:, ci])
        categories.append(index)
        if not accepted.all():
            pending.append((ci, np.flatnonzero(~accepted)))
    times = []
    for ci in plan.timestamps:
        ms, accepted = read_timestamps(buf, starts[:, ci], ends[:, ci])
        times.append(ms)
        if not accepted.all():
            pending.append((ci, np.flatnonzero(~accepted)))
    return _Cells(fields.index, numbers, categories, times), [(ci, rows) for ci, rows in pending if rows.size]


def _read_quoted(plan: _Plan, quoted: list[tuple[int, list[str]]], errors: dict[int, str]) -> _Cells:
    """Quoted rows (rare): every field goes to the scalar parser."""
    for i, fields in quoted:
        if len(fields) != plan.ncols:
            errors[i] = field_count_reason(plan.ncols, len(fields))
    rows = [(i, fields) for i, fields in quoted if len(fields) == plan.ncols]
    cells = _Cells.empty(plan, np.array([i for i, _ in rows], dtype=np.int64))
    everything = np.arange(len(rows))
    bad = _settle(plan, cells, [(ci, everything) for ci in range(plan.ncols)], lambda r, ci: rows[r][1][ci])
    return _drop(cells, bad, errors)


# --- the raw matrix -----------------------------------------------------------------------------------------------


def _hour_and_weekday(epoch_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hour of day (0-23) and day of week (Monday = 0) in UTC of epoch milliseconds: the one derivation."""
    days = np.floor_divide(epoch_ms, _MS_PER_DAY)
    return np.floor_divide(epoch_ms, _MS_PER_HOUR) % 24, (days + _THURSDAY) % 7


def _assemble(plan: _Plan, cells: _Cells, errors: dict[int, str]) -> Decoded:
    m = cells.index.size
    x = np.empty((m, len(plan.slots)), dtype=np.float32)
    if plan.number_slots.size:
        x[:, plan.number_slots] = cells.numbers[:, plan.number_sources]
    for slot, k in plan.category_slots:
        x[:, slot] = cells.categories[k]
    for hour_slot, dow_slot, k in plan.time_slots:
        x[:, hour_slot], x[:, dow_slot] = _hour_and_weekday(cells.times[k])
    return Decoded(
        x=x,
        y=np.ascontiguousarray(cells.numbers[:, plan.label], dtype=np.float32),
        good=cells.index.astype(np.int64, copy=False),
        errors=sorted(errors.items()),
    )
