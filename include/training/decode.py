"""Decode a mini-batch of Kafka message values (one CSV row each) into the model's raw input matrix.

The raw matrix holds one float32 slot per numeric or category feature (the number itself, or the category's index)
and two per timestamp (hour of day 0-23, day of week with Monday = 0); :func:`raw_layout` describes the slots and is
stored in the model's :class:`include.model.SchemaEncoding` layer, which turns them into the scaled / one-hot
features. So this module only parses and checks; it never scales or encodes, and it never raises for bad data:
an undecodable message is reported in ``Decoded.errors`` with its reason and left out.

Parsing is vectorised over the whole mini-batch, because a trainer that keeps up with a topic must decode hundreds
of thousands of rows a second: the values are joined into one buffer, field boundaries found with numpy, and plain
integers read 8 bytes at a time (no Python object per field). Other decimals are read character by character in
numpy, and anything else (exponents, spaces, ``nan``...) one field at a time by Python's own parsers; so the fast
path changes speed, never results. Per-row Python work happens only for rows that need it (non-ASCII, quoting,
line endings, errors).

Only the columns the model uses (the features and the label) are checked; a non-feature column only has to be
present. Checks: UTF-8, field count, a number in an int/float column (an integral one in an int column) within the
declared ``[min, max]``, a declared category, an ISO 8601 timestamp (``2026-01-05T13:00:00Z``; an offset is
converted to UTC, a naive time is taken as UTC). A leading byte-order mark and trailing CR/LF are tolerated.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import numpy as np

from include.schema import CsvSchema

# Stands in for a comma inside a quoted field, so that rows can be joined and split on plain commas.
_COMMA_STAND_IN = b"\x1f"
_MAX_FAST_DIGITS = 15  # below 2**53: the mantissa is summed exactly in float64
_POW10 = 10.0 ** np.arange(0, 23)
_SEP, _NL, _DOT, _MINUS, _ZERO = 44, 10, 46, 45, 48

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
    return [(name, kind, dict(params)) for name, kind, params, _ in _slots(schema)]


def raw_width(schema: CsvSchema) -> int:
    """Number of slots (columns) of the raw matrix."""
    return len(_slots(schema))


_PLANS: dict[int, tuple[CsvSchema, "_Plan"]] = {}


@dataclass(frozen=True)
class _Plan:
    slots: tuple[tuple[str, str, dict[str, Any], int], ...]  # raw slots with the CSV column each comes from
    ncols: int
    label: int
    numeric: tuple[int, ...]  # CSV columns read as numbers (numeric features and the label), ascending
    all_numeric: bool  # numeric == every column: the fields need no selection
    lo: np.ndarray
    hi: np.ndarray
    is_int: np.ndarray
    categories: tuple[int, ...]
    timestamps: tuple[int, ...]
    slot_src: np.ndarray  # per raw slot: position in ``numeric`` (or -1)


def _slots(schema: CsvSchema) -> tuple[tuple[str, str, dict[str, Any], int], ...]:
    return _plan(schema).slots


def _plan(schema: CsvSchema) -> _Plan:
    # Keyed by identity (hashing a schema on every mini-batch costs more than decoding it); the schema object
    # is kept in the entry, so an id is never reused while cached.
    hit = _PLANS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    slots = []
    for col in schema.feature_columns:
        ci = schema.index(col.name)
        if col.type in ("int", "float"):
            slots.append((col.name, "numeric", {"min": float(col.min), "max": float(col.max)}, ci))
        elif col.type == "category":
            slots.append((col.name, "category", {"categories": list(col.categories)}, ci))
        else:  # timestamp
            slots.append((f"{col.name}.hour", "hour", {}, ci))
            slots.append((f"{col.name}.dow", "dow", {}, ci))
    feats = schema.feature_columns
    numeric = sorted({schema.index(c.name) for c in feats if c.type in ("int", "float")} | {schema.label_index})
    cols = [schema.columns[i] for i in numeric]
    plan = _Plan(
        slots=tuple(slots),
        ncols=len(schema.columns),
        label=schema.label_index,
        numeric=tuple(numeric),
        all_numeric=len(numeric) == len(schema.columns),
        lo=np.array([c.min for c in cols], dtype=np.float64),
        hi=np.array([c.max for c in cols], dtype=np.float64),
        is_int=np.array([c.type == "int" for c in cols], dtype=bool),
        categories=tuple(schema.index(c.name) for c in feats if c.type == "category"),
        timestamps=tuple(schema.index(c.name) for c in feats if c.type == "timestamp"),
        slot_src=np.array([numeric.index(s[3]) if s[1] == "numeric" else -1 for s in slots], dtype=np.int64),
    )
    if len(_PLANS) > 64:
        _PLANS.clear()
    _PLANS[id(schema)] = (schema, plan)
    return plan


_PAD = 8  # bytes in front of the first row, so an 8-byte window ending at any field stays inside the buffer


def decode_batch(schema: CsvSchema, values: Sequence[bytes | bytearray | str | None]) -> Decoded:
    """Decode message values (each one CSV row in the schema's column order, no header) into raw features.

    Args:
        schema: The declared schema.
        values: The messages' values, in stream order.

    Returns:
        The :class:`Decoded` rows; bad messages are listed in ``errors`` and left out, never raised.
    """
    plan = _plan(schema)
    n = len(values)
    width = len(plan.slots)
    errors: dict[int, str] = {}
    rows = _normalise(values, errors)
    if errors:
        ok_idx = np.array([i for i in range(n) if i not in errors], dtype=np.int64)
        body = b"\n".join([rows[i] for i in ok_idx])
    else:
        ok_idx = np.arange(n, dtype=np.int64)
        body = b"\n".join(rows)
    if ok_idx.size == 0:
        return _result(np.zeros((0, width), np.float32), np.zeros(0, np.float32), ok_idx, errors)

    buf_bytes = b" " * _PAD + body + b"\n"
    buf = np.frombuffer(buf_bytes, dtype=np.uint8)
    ends = np.flatnonzero((buf == _SEP) | (buf == _NL))  # each field's exclusive end (its separator)
    row_last = np.flatnonzero(buf[ends] == _NL)
    counts = np.diff(row_last, prepend=-1)  # fields per row (each row ends with exactly one newline)
    if not (counts == plan.ncols).all():
        good_count = counts == plan.ncols
        for r in np.flatnonzero(~good_count):
            i = int(ok_idx[r])
            errors[i] = "empty message" if rows[i] in (b"", "") else f"{counts[r]} field{'s' if counts[r] != 1 else ''}, expected {plan.ncols}"
        starts = np.concatenate(([_PAD], ends[:-1] + 1))[np.repeat(good_count, counts)]
        ends = ends[np.repeat(good_count, counts)]
        ok_idx = ok_idx[good_count]
    else:
        starts = None
    m = ok_idx.size
    if m == 0:
        return _result(np.zeros((0, width), np.float32), np.zeros(0, np.float32), ok_idx, errors)
    if starts is None:
        starts = np.empty_like(ends)
        starts[0] = _PAD
        starts[1:] = ends[:-1] + 1
    ends = ends.reshape(m, plan.ncols)
    starts = starts.reshape(m, plan.ncols)

    reasons: dict[int, tuple[int, str]] = {}  # row -> (CSV column, reason): the first bad column is reported

    def note(rows_bad: np.ndarray, col: int, why: Callable[[int], str]) -> None:
        for r in np.flatnonzero(rows_bad).tolist():
            if r not in reasons or reasons[r][0] > col:
                reasons[r] = (col, why(r))

    def token(r: int, ci: int) -> str:
        raw = buf_bytes[int(starts[r, ci]):int(ends[r, ci])].replace(_COMMA_STAND_IN, b",")
        return raw.decode("utf-8", errors="replace")

    # Numbers: every numeric column in one pass.
    sel = list(plan.numeric)
    if plan.all_numeric:
        num_starts, num_ends = starts, ends
    else:
        num_starts, num_ends = starts[:, sel], ends[:, sel]
    vals, okv, integral = _parse_numbers(buf, buf_bytes, num_starts.ravel(), num_ends.ravel())
    vals = vals.reshape(m, len(sel))
    okv = okv.reshape(m, len(sel))
    inside = (vals >= plan.lo) & (vals <= plan.hi)
    bad_cell = ~(okv & inside)
    if not integral:
        bad_cell |= plan.is_int & (vals != np.floor(vals))
    bad = bad_cell.any(axis=1)
    if bad.any():
        for j, ci in enumerate(sel):
            col = schema.columns[ci]
            v = vals[:, j]
            notnum = ~okv[:, j]
            note(notnum, ci, lambda r, ci=ci: f"column {schema.columns[ci].name!r}: {token(r, ci)!r} is not a number")
            frac = okv[:, j] & (v != np.floor(v)) if col.type == "int" else np.zeros(m, bool)
            note(frac, ci, lambda r, ci=ci: f"column {schema.columns[ci].name!r}: {token(r, ci)!r} is not an integer")
            out = okv[:, j] & ~frac & ~inside[:, j]
            note(out, ci, lambda r, ci=ci, v=v: f"column {schema.columns[ci].name!r}: {_fmt(v[r])} is outside "
                 f"[{_fmt(schema.columns[ci].min)}, {_fmt(schema.columns[ci].max)}]")

    x = np.empty((m, width), dtype=np.float32)
    num_slots = np.flatnonzero(plan.slot_src >= 0)
    if num_slots.size:
        x[:, num_slots] = vals[:, plan.slot_src[num_slots]]
    for ci in plan.categories:
        col = schema.columns[ci]
        idx = _parse_categories(buf_bytes, starts[:, ci], ends[:, ci], col.categories)
        unknown = idx < 0
        if unknown.any():
            bad |= unknown
            note(unknown, ci, lambda r, ci=ci: f"column {schema.columns[ci].name!r}: unknown category {token(r, ci)!r}")
        x[:, [k for k, s in enumerate(plan.slots) if s[1] == "category" and s[3] == ci]] = idx[:, None]
    for ci in plan.timestamps:
        hour, dow, okt = _parse_timestamps(buf, buf_bytes, starts[:, ci], ends[:, ci])
        if not okt.all():
            bad |= ~okt
            note(~okt, ci, lambda r, ci=ci: f"column {schema.columns[ci].name!r}: {token(r, ci)!r} "
                 "is not an ISO 8601 timestamp")
        for k, s in enumerate(plan.slots):
            if s[3] == ci:
                x[:, k] = hour if s[1] == "hour" else dow
    y = vals[:, sel.index(plan.label)].astype(np.float32)
    if bad.any():
        for r, (_, why) in reasons.items():
            errors[int(ok_idx[r])] = why
        keep = ~bad
        x, y, ok_idx = x[keep], y[keep], ok_idx[keep]
    return _result(x, y, ok_idx, errors)


def _result(x: np.ndarray, y: np.ndarray, good: np.ndarray, errors: dict[int, str]) -> Decoded:
    return Decoded(
        x=np.ascontiguousarray(x, dtype=np.float32),
        y=np.ascontiguousarray(y, dtype=np.float32),
        good=np.asarray(good, dtype=np.int64),
        errors=sorted(errors.items()),
    )


def _fmt(v: float) -> str:
    return str(int(v)) if math.isfinite(v) and v == int(v) else repr(float(v))


# --- message normalisation -----------------------------------------------------------------------------------


def _normalise(values: Sequence[Any], errors: dict[int, str]) -> list[bytes]:
    """Return one bytes row per message, ready to join with newlines; record unusable messages in ``errors``.

    The common case (plain ASCII bytes, one line each) costs one join and three scans of the joined buffer.
    """
    rows = values if isinstance(values, list) else list(values)
    try:
        joined = b"\n".join(rows)
    except TypeError:
        joined = None
    if (
        joined is not None
        and joined.isascii()
        and joined.count(b"\n") == len(rows) - 1
        and b"\r" not in joined
        and b'"' not in joined
        and _COMMA_STAND_IN not in joined
    ):
        return rows
    return [_normalise_one(i, v, errors) for i, v in enumerate(rows)]


def _normalise_one(i: int, value: Any, errors: dict[int, str]) -> bytes:
    if value is None:
        errors[i] = "empty message (no value)"
        return b""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = bytes(value).decode("utf-8")
        except (UnicodeDecodeError, TypeError) as exc:
            errors[i] = f"not valid UTF-8 ({exc.__class__.__name__}: {exc})" if isinstance(
                exc, UnicodeDecodeError) else f"unsupported value type {type(value).__name__}"
            return b""
    text = text.removeprefix("\ufeff").rstrip("\r\n")
    if "\n" in text or "\r" in text:
        errors[i] = "more than one line in one message"
        return b""
    if "\x1f" in text:
        errors[i] = "control character U+001F in the row"
        return b""
    if '"' in text:
        try:
            fields = next(csv.reader([text], strict=True))
        except (csv.Error, StopIteration) as exc:
            errors[i] = f"bad CSV quoting ({exc})"
            return b""
        text = ",".join(f.replace(",", "\x1f") for f in fields)
    return text.encode("utf-8")


# --- numbers --------------------------------------------------------------------------------------------------

_U8 = np.dtype("<u8")
_KEEP_LAST = np.array([((1 << (8 * k)) - 1) << (8 * (8 - k)) if k else 0 for k in range(9)], dtype=_U8)
_C30, _CF0, _C06, _C10 = (np.uint64(int(b * 8, 16)) for b in ("30", "F0", "06", "10"))


def _parse_numbers(buf: np.ndarray, buf_bytes: bytes, starts: np.ndarray,
                   ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Read the number in every field ``buf[start:end]``.

    Unsigned integers of up to 8 digits, by far the common case, are read 8 bytes at a time: the field's last
    8 bytes as one little-endian uint64, the bytes before the field masked off, every byte checked to be a digit
    and the digits combined pairwise (SWAR) - about ten numpy passes over the fields whatever their length.
    Other plain decimals (sign, point) are read character by character in numpy, and anything else by
    Python's ``float``.

    Returns:
        ``(values float64, ok bool, integral)``; ``integral`` is True when every value is known to be a whole number.
    """
    lens = ends - starts
    words = np.ndarray(shape=(buf.size - 7,), dtype=_U8, buffer=buf_bytes, strides=(1,))[ends - 8]
    y = (words ^ _C30) & _KEEP_LAST[np.minimum(lens, 8)]
    ok = ((y & _CF0) == 0) & (((y + _C06) & _C10) == 0) & (lens > 0) & (lens <= 8)
    y = (y * np.uint64(10) + (y >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    y = (y * np.uint64(100) + (y >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    y = (y * np.uint64(10000) + (y >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    vals = y.astype(np.float64)
    if ok.all():
        return vals, ok, True
    rest = np.flatnonzero(~ok)
    v2, ok2 = _parse_decimals(buf, starts[rest], ends[rest])
    vals[rest] = v2
    ok[rest] = ok2
    for k in rest[~ok2].tolist():
        tok = buf_bytes[int(starts[k]):int(ends[k])]
        if b"_" in tok:  # float() takes 1_000; a CSV number does not
            continue
        try:
            vals[k] = float(tok)
        except ValueError:
            continue
        ok[k] = True
    return vals, ok, False


def _parse_decimals(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Read ``-?digits[.digits]`` (at most 15 digits) from each field, working back from its last character.

    One numpy pass per character position over the fields still that long; no per-field Python work.
    """
    nf = starts.size
    lens = ends - starts
    mant = np.zeros(nf, dtype=np.float64)
    ndig = np.zeros(nf, dtype=np.int64)
    frac = np.zeros(nf, dtype=np.int64)
    has_dot = np.zeros(nf, dtype=bool)
    neg = np.zeros(nf, dtype=bool)
    ok = lens > 0
    act = np.flatnonzero(ok)
    for j in range(int(lens.max()) if nf else 0):
        if j:
            act = act[lens[act] > j]
        if act.size == 0:
            break
        ch = buf[ends[act] - 1 - j]
        d = ch.astype(np.int64) - _ZERO
        isdig = (d >= 0) & (d <= 9)
        a = act[isdig]
        mant[a] += d[isdig] * _POW10[np.minimum(ndig[a], 22)]
        ndig[a] += 1
        dot = ch == _DOT
        a = act[dot]
        ok[a[has_dot[a]]] = False
        has_dot[a] = True
        frac[a] = ndig[a]
        minus = ch == _MINUS
        a = act[minus]
        at_start = lens[a] == j + 1
        ok[a[~at_start]] = False
        neg[a[at_start]] = True
        ok[act[~(isdig | dot | minus)]] = False
    ok &= (ndig > 0) & (ndig <= _MAX_FAST_DIGITS)
    vals = mant / _POW10[np.minimum(frac, 22)]
    vals[neg] = -vals[neg]
    return vals, ok


# --- categories -----------------------------------------------------------------------------------------------


def _parse_categories(buf_bytes: bytes, starts: np.ndarray, ends: np.ndarray,
                      categories: tuple[str, ...]) -> np.ndarray:
    """Index of each field's category in ``categories``, -1 when unknown (surrounding spaces ignored)."""
    table = {c.encode("utf-8").replace(b",", _COMMA_STAND_IN): k for k, c in enumerate(categories)}
    get = table.get
    out = np.fromiter(
        (get(buf_bytes[s:e], -2) for s, e in zip(starts.tolist(), ends.tolist())), dtype=np.int64, count=starts.size
    )
    for r in np.flatnonzero(out == -2):
        out[r] = get(buf_bytes[int(starts[r]):int(ends[r])].strip(), -1)
    return out


# --- timestamps -----------------------------------------------------------------------------------------------

_TS_LEN = 20  # YYYY-MM-DDTHH:MM:SSZ
_TS_DIGITS = (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18)
_TS_PUNCT = ((4, ord("-")), (7, ord("-")), (10, ord("T")), (13, ord(":")), (16, ord(":")), (19, ord("Z")))
_DAYS_IN_MONTH = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _parse_timestamps(buf: np.ndarray, buf_bytes: bytes, starts: np.ndarray,
                      ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hour of day and day of week (Monday = 0) of each field, in UTC.

    The canonical ``YYYY-MM-DDTHH:MM:SSZ`` form is read with numpy; any other form goes to
    ``datetime.fromisoformat`` one field at a time.

    Returns:
        ``(hour, dow, ok)``.
    """
    m = starts.size
    hour = np.zeros(m, dtype=np.float64)
    dow = np.zeros(m, dtype=np.float64)
    fast = (ends - starts) == _TS_LEN
    idx = np.flatnonzero(fast)
    if idx.size:
        chars = buf[starts[idx, None] + np.arange(_TS_LEN)].astype(np.int64)
        good = np.ones(idx.size, dtype=bool)
        for pos, c in _TS_PUNCT:
            good &= chars[:, pos] == c
        digs = chars[:, list(_TS_DIGITS)] - _ZERO
        good &= ((digs >= 0) & (digs <= 9)).all(axis=1)
        year = digs[:, 0] * 1000 + digs[:, 1] * 100 + digs[:, 2] * 10 + digs[:, 3]
        month = digs[:, 4] * 10 + digs[:, 5]
        day = digs[:, 6] * 10 + digs[:, 7]
        hh = digs[:, 8] * 10 + digs[:, 9]
        mi = digs[:, 10] * 10 + digs[:, 11]
        ss = digs[:, 12] * 10 + digs[:, 13]
        leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
        mdays = _DAYS_IN_MONTH[np.clip(month, 0, 12)] - ((month == 2) & ~leap)
        good &= (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= mdays)
        good &= (hh <= 23) & (mi <= 59) & (ss <= 59)
        hour[idx] = hh
        dow[idx] = _weekday(year, month, day)
        fast[idx[~good]] = False
    ok = fast.copy()
    for r in np.flatnonzero(~fast):
        tok = buf_bytes[int(starts[r]):int(ends[r])]
        try:
            t = datetime.fromisoformat(tok.decode("utf-8").strip())
        except ValueError:
            continue
        if t.tzinfo is not None:
            t = t.astimezone(timezone.utc)
        hour[r] = t.hour
        dow[r] = t.weekday()
        ok[r] = True
    return hour, dow, ok


def _weekday(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Day of week (Monday = 0) from the proleptic Gregorian date (days-from-civil, vectorised)."""
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468  # days since 1970-01-01, a Thursday
    return (days + 3) % 7
