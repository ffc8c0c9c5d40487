"""Streaming validation of a CSV file against its declared schema (``include.schema``).

Every record of a landed file comes out of :func:`iter_rows` either as a :class:`ValidRow`, whose ``text`` is the
normalised CSV line that becomes the Kafka message value, or as a :class:`RowError` that says which physical line
was bad, in which field, and why. The producer sends the first kind to the topic and the second to the dead-letter
topic; :func:`validate_file` only counts them.

This module must never read a whole file into memory, nor hold more than one chunk plus ``max_line_bytes`` of it:
files are read in fixed-size binary chunks and an overlong line is skipped, not collected, so memory stays bounded
whatever a file holds. It never writes anything, and it never guesses a layout: the schema says what a valid row is.

Speed matters (the ingest must pass well over 200,000 rows/s through one process), so the common path is kept
short: a chunk is decoded at once and split on newlines, a line without a quote is split on commas, and each field
is looked up in a per-column cache of strings already known to be valid. A chunk with no quote, no empty line and
no unreadable line at all (nearly every chunk) skips even the per-line checks for those. Everything else (quotes,
cache misses, errors) takes a slower, careful path.
"""

from __future__ import annotations

import csv
import io
import os
import re
from contextlib import contextmanager
from operator import contains
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, BinaryIO, Callable, Iterator, Union

from include.schema import Column, CsvSchema

BOM = b"\xef\xbb\xbf"
# One read; 1 MiB keeps the per-chunk overhead negligible while memory stays small.
CHUNK_BYTES = 1 << 20
MAX_LINE_BYTES = 1_000_000
RAW_CHARS = 200
# How many distinct valid strings each column remembers; bounds memory for columns with many distinct values
# (timestamps, floats), where values past the limit are simply checked the slow way every time.
KNOWN_VALUES_LIMIT = 16_384

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

Source = Union[str, os.PathLike, BinaryIO]


class HeaderError(ValueError):
    """The file's first line is not the header its schema declares."""


@dataclass(frozen=True)
class RowError:
    """One bad record.

    Attributes:
        file: The file's name, as given to :func:`iter_rows`.
        line: The 1-based physical line number where the record starts.
        field: The offending column's name, or None when the record as a whole is bad.
        reason: What is wrong, for a human (e.g. ``field 'x' = '25' is above max 19``).
        raw: The record's raw text, truncated to 200 characters.
    """

    file: str
    line: int
    field: str | None
    reason: str
    raw: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


# Not frozen: a frozen dataclass is about four times slower to build, and millions are built per second.
@dataclass(slots=True)
class ValidRow:
    """One valid record.

    Attributes:
        line: The 1-based physical line number where the record starts.
        fields: The field strings, in schema column order.
        text: The record as normalised CSV (no BOM, no CR, no line end): the Kafka message value.
        key: The schema's key field, or None if the schema declares no key.
        event_time_ms: The schema's time field as epoch milliseconds, or None if it declares no time column.
    """

    line: int
    fields: tuple[str, ...]
    text: str
    key: str | None
    event_time_ms: int | None


# A valid record as :func:`iter_records` yields it: (line, text, key, event_time_ms), as in ValidRow.
Record = tuple[int, str, Union[str, None], Union[int, None]]


@dataclass
class ValidationSummary:
    """Counts from :func:`validate_file`; ``errors`` holds only the first few bad rows."""

    valid: int = 0
    bad: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def bad_fraction(self) -> float:
        total = self.valid + self.bad
        return self.bad / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (for XCom and logs)."""
        return {
            "valid": self.valid,
            "bad": self.bad,
            "bad_fraction": self.bad_fraction,
            "errors": [e.as_dict() for e in self.errors],
        }


class _FieldInvalid(ValueError):
    """Raised by a column checker; its message is the reason without the field prefix."""


# ---------------------------------------------------------------------------------------------------------------
# Column checks (the slow, exact path; their results fill the caches that the fast path looks up)


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_range(value: float, col: Column) -> None:
    if col.min is not None and value < col.min:
        raise _FieldInvalid(f"is below min {_number_text(col.min)}")
    if col.max is not None and value > col.max:
        raise _FieldInvalid(f"is above max {_number_text(col.max)}")


def _int_checker(col: Column) -> Callable[[str], Any]:
    def check(text: str) -> None:
        # int() alone would also take ' 7', '1_000' and non-ASCII digits; a CSV integer is plain ASCII digits.
        digits = text[1:] if text[:1] in ("-", "+") else text
        if not (digits.isascii() and digits.isdigit()):
            raise _FieldInvalid("is not an integer")
        if len(digits) > 30:
            # int() refuses strings over 4,300 digits, and no declared range needs 30; say so instead.
            raise _FieldInvalid(f"has {len(digits)} digits, out of any declared range")
        _check_range(int(text), col)

    return check


def _float_checker(col: Column) -> Callable[[str], Any]:
    def check(text: str) -> None:
        # float() alone would also take 'nan', 'inf', '1_0' and surrounding spaces.
        if not _FLOAT.fullmatch(text):
            raise _FieldInvalid("is not a number")
        _check_range(float(text), col)

    return check


def _category_checker(col: Column) -> Callable[[str], Any]:
    allowed = frozenset(col.categories)
    listing = ", ".join(col.categories)

    def check(text: str) -> None:
        if text not in allowed:
            raise _FieldInvalid(f"is not one of {listing}")

    return check


def _timestamp_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _FieldInvalid("is not an ISO 8601 timestamp (e.g. 2026-01-05T13:00:00Z)") from None
    if moment.tzinfo is None:
        raise _FieldInvalid("has no time zone; expected UTC, e.g. 2026-01-05T13:00:00Z")
    if moment.utcoffset() != timedelta(0):
        raise _FieldInvalid("is not in UTC; expected a Z or +00:00 suffix")
    return (moment - _EPOCH) // _ONE_MS


def parse_utc_ms(text: str) -> int:
    """Parse an ISO 8601 UTC timestamp (``2026-01-05T13:00:00Z``) into epoch milliseconds, as the validator does.

    Args:
        text: The timestamp; it must carry a zero UTC offset (``Z`` or ``+00:00``).

    Returns:
        Milliseconds since 1970-01-01T00:00:00Z.

    Raises:
        ValueError: The text is not an ISO 8601 timestamp in UTC.
    """
    try:
        return _timestamp_ms(text)
    except _FieldInvalid as exc:
        raise ValueError(f"{text!r} {exc}") from None


_CHECKER_FACTORIES: dict[str, Callable[[Column], Callable[[str], Any]]] = {
    "int": _int_checker,
    "float": _float_checker,
    "category": _category_checker,
    "timestamp": lambda col: _timestamp_ms,
}


# ---------------------------------------------------------------------------------------------------------------
# Row checks


class _RowChecker:
    """Checks split records against a schema; remembers valid field strings so repeats are a dict lookup."""

    def __init__(self, schema: CsvSchema, file_name: str) -> None:
        self.file = file_name
        self.columns = schema.columns
        self.width = len(schema.columns)
        self.key_index = schema.key_index
        self.time_index = schema.time_index
        self.checks = [_CHECKER_FACTORIES[c.type](c) for c in schema.columns]
        # Per column: valid string -> parsed value (epoch ms for the time column, None otherwise).
        self.known: list[dict[str, Any]] = [dict.fromkeys(c.categories) for c in schema.columns]

    def error(self, line: int, field_name: str | None, reason: str, raw: str) -> RowError:
        return RowError(self.file, line, field_name, reason, raw[:RAW_CHARS])

    def check(self, line: int, fields: list[str], text: str) -> ValidRow | RowError:
        """Check one record exactly, filling the caches; the fast path in :func:`iter_rows` falls back to this."""
        if len(fields) != self.width:
            if not text.strip():
                return self.error(line, None, "empty line", text)
            return self.error(line, None, f"expected {self.width} fields, found {len(fields)}", text)
        for col, check, known, value in zip(self.columns, self.checks, self.known, fields):
            if value in known:
                continue
            try:
                parsed = check(value)
            except _FieldInvalid as exc:
                return self.error(line, col.name, f"field {col.name!r} = {value[:40]!r} {exc}", text)
            if len(known) < KNOWN_VALUES_LIMIT:
                known[value] = parsed
        return ValidRow(line, tuple(fields), text, self.key_of(fields), self.time_of(fields))

    def key_of(self, fields: list[str]) -> str | None:
        return None if self.key_index is None else fields[self.key_index]

    def time_of(self, fields: list[str]) -> int | None:
        if self.time_index is None:
            return None
        text = fields[self.time_index]
        known = self.known[self.time_index].get(text)
        return known if known is not None else _timestamp_ms(text)


# ---------------------------------------------------------------------------------------------------------------
# Quoted records (RFC 4180): the only records that may span physical lines


def _to_csv(fields: list[str]) -> str:
    """Serialise fields as one CSV record, quoting only the fields that need it."""
    out = []
    for value in fields:
        if "," in value or '"' in value or "\n" in value or "\r" in value:
            value = '"' + value.replace('"', '""') + '"'
        out.append(value)
    return ",".join(out)


class _QuotedRecords:
    """Joins physical lines into records while a quoted field is open.

    A record is complete when its count of quote characters is even (an escaped quote counts two). A record that
    never completes (end of file, ``max_line_bytes`` reached, an unreadable line) or does not parse is reported at
    its first line, and the lines after its first are read again as records of their own: one stray quote must
    not swallow the rest of a file.
    """

    def __init__(self, file_name: str, max_record_chars: int) -> None:
        self.file = file_name
        self.limit = max_record_chars
        self.pending: list[tuple[int, str]] = []
        self.size = 0

    def feed(self, line_no: int, line: str, out: list[Any]) -> None:
        """Add one physical line; complete records go to ``out`` as (line, fields, text), bad ones as RowError."""
        odd = line.count('"') % 2 == 1
        if not self.pending:
            if odd:
                self.pending, self.size = [(line_no, line)], len(line)
            elif '"' in line:
                self._parse([(line_no, line)], out)
            else:
                out.append((line_no, None, line))
            return
        self.pending.append((line_no, line))
        self.size += len(line) + 1
        if odd:
            lines, self.pending = self.pending, []
            self._parse(lines, out)
        elif self.size > self.limit:
            self.abort(f"quoted field not closed within {self.limit} characters", out)

    def abort(self, reason: str, out: list[Any]) -> None:
        """Report the open record as bad and re-read its later lines."""
        lines, self.pending = self.pending, []
        out.append(self._error(lines, reason))
        for line_no, line in lines[1:]:
            self.feed(line_no, line, out)

    def _parse(self, lines: list[tuple[int, str]], out: list[Any]) -> None:
        text = "\n".join(line for _, line in lines)
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
        except csv.Error as exc:
            rows, problem = [], str(exc)
        else:
            problem = "" if len(rows) == 1 else "quoting splits it into several records"
        if problem:
            out.append(self._error(lines, f"malformed quoting: {problem}"))
            for line_no, line in lines[1:]:
                self.feed(line_no, line, out)
            return
        out.append((lines[0][0], rows[0], _to_csv(rows[0])))

    def _error(self, lines: list[tuple[int, str]], reason: str) -> RowError:
        raw = "\n".join(line for _, line in lines[:3])
        return RowError(self.file, lines[0][0], None, reason, raw[:RAW_CHARS])


# ---------------------------------------------------------------------------------------------------------------
# Physical lines


def _raw_text(data: bytes) -> str:
    return data[: RAW_CHARS * 2].decode("utf-8", "replace")[:RAW_CHARS]


def _decode_lines(body: bytes, first_no: int, file_name: str, max_line_bytes: int) -> tuple[list[Any], bool]:
    """Decode complete lines (``body`` ends with a newline); unreadable or oversized lines become RowErrors.

    Returns:
        The lines, and whether they are all *plain*: non-empty strs without a quote, which the fast path can take
        without looking at each one first.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _decode_lines_one_by_one(body, first_no, file_name, max_line_bytes), False
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    # Three scans of the whole chunk in C replace three tests per line in the hot loop.
    plain = '"' not in text and "\n\n" not in text and not text.startswith("\n")
    lines: list[Any] = text.split("\n")
    lines.pop()  # the empty piece after the final newline
    # A str has at most as many characters as bytes, so only lines this long can be over the byte limit.
    if len(body) > max_line_bytes and max(map(len, lines)) * 4 > max_line_bytes:
        for i, line in enumerate(lines):
            if len(line) * 4 > max_line_bytes and len(line.encode("utf-8")) > max_line_bytes:
                lines[i] = _too_long(file_name, first_no + i, max_line_bytes, line.encode("utf-8"))
                plain = False
    return lines, plain


def _decode_lines_one_by_one(body: bytes, first_no: int, file_name: str, max_line_bytes: int) -> list[Any]:
    lines: list[Any] = []
    for i, raw in enumerate(body.split(b"\n")[:-1]):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > max_line_bytes:
            lines.append(_too_long(file_name, first_no + i, max_line_bytes, raw))
            continue
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            reason = f"invalid UTF-8 at byte {exc.start + 1} of the line"
            lines.append(RowError(file_name, first_no + i, None, reason, _raw_text(raw)))
    return lines


def _too_long(file_name: str, line_no: int, max_line_bytes: int, head: bytes) -> RowError:
    reason = f"line is longer than {max_line_bytes} bytes (skipped)"
    # Only the first max_line_bytes are sure to have been seen, whatever the chunk size: raw stops there.
    return RowError(file_name, line_no, None, reason, _raw_text(head[:max_line_bytes]))


def _read_start(stream: BinaryIO, size: int) -> bytes:
    """Read the first chunk, long enough to see a whole byte-order mark, and drop the mark."""
    data = stream.read(size)
    while data and len(data) < len(BOM):
        more = stream.read(size)
        if not more:
            break
        data += more
    if not data.startswith(BOM):
        return data
    # An empty string would read as end of file, so a chunk that held only the mark is followed by the next one.
    return data[len(BOM) :] or stream.read(size)


def _line_batches(
    stream: BinaryIO, file_name: str, max_line_bytes: int, chunk_bytes: int
) -> Iterator[tuple[int, list[Any], bool]]:
    """Yield (first line number, lines, plain) per chunk; a line is a str (no CR, no LF) or a RowError.

    ``plain`` says that every line of the batch is a non-empty str without a quote (see :func:`_decode_lines`).

    At most one chunk plus ``max_line_bytes`` is held: a partial line that outgrows the limit is reported, dropped
    and the rest of it skipped up to the next newline without being kept.
    """
    line_no, carry, skipping = 1, b"", False
    chunk = _read_start(stream, chunk_bytes)
    while chunk:
        if skipping:
            newline = chunk.find(b"\n")
            if newline >= 0:
                chunk, skipping, line_no = chunk[newline + 1 :], False, line_no + 1
        if not skipping:
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                lines, plain = _decode_lines(data[:cut], line_no, file_name, max_line_bytes)
                yield line_no, lines, plain
                line_no += len(lines)
            if len(carry) > max_line_bytes:
                yield line_no, [_too_long(file_name, line_no, max_line_bytes, carry)], False
                carry, skipping = b"", True
        chunk = stream.read(chunk_bytes)
    if carry:  # a last line without a line end
        yield line_no, *_decode_lines(carry + b"\n", line_no, file_name, max_line_bytes)


# ---------------------------------------------------------------------------------------------------------------
# Public API


@contextmanager
def _binary(source: Source) -> Iterator[BinaryIO]:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as stream:
            yield stream
        return
    if isinstance(source, io.TextIOBase):
        raise TypeError("iter_rows needs a path or a file opened in binary mode ('rb')")
    yield source  # the caller's file: the caller closes it


def _source_name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", "<stream>"))


def _check_header(schema: CsvSchema, first: Any, file_name: str) -> None:
    expected = schema.header_line()
    if first is None:
        raise HeaderError(f"{file_name}: file is empty; expected the header {expected!r}")
    if isinstance(first, RowError):
        raise HeaderError(f"{file_name}: expected the header {expected!r}, found an unreadable line ({first.reason})")
    found = first.replace("\r", "")
    fields = next(csv.reader([found]), []) if '"' in found else found.split(",")
    if tuple(fields) != schema.names:
        raise HeaderError(f"{file_name}: expected the header {expected!r}, found {found[:RAW_CHARS]!r}")


def iter_rows(
    source: Source,
    schema: CsvSchema,
    *,
    file_name: str | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[ValidRow | RowError]:
    """Validate a CSV file record by record, in bounded memory.

    Args:
        source: A path, or a file object opened in binary mode (left open).
        schema: The declared layout the records must follow.
        file_name: The name to put in errors (default: the path, or the file object's ``name``).
        max_line_bytes: Longer lines (and quoted records) are reported and skipped without being held in memory.
        chunk_bytes: How much to read at once.

    Yields:
        For each record in file order, a :class:`ValidRow` or a :class:`RowError` (one per bad record). The header
        line, when the schema declares one, is checked and not yielded.

    Raises:
        HeaderError: The schema declares a header and the file's first line is not it (or the file is empty).
    """
    yield from _iterate(source, schema, file_name, max_line_bytes, chunk_bytes, records=False)


def iter_records(
    source: Source,
    schema: CsvSchema,
    *,
    file_name: str | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[Record | RowError]:
    """:func:`iter_rows` for a producer's hot loop: each valid record as a plain :data:`Record` tuple.

    The same records, checks and errors in the same order as :func:`iter_rows`; only a valid record comes as
    ``(line, text, key, event_time_ms)`` (the :class:`ValidRow` attributes of the same names) instead of a
    ValidRow, which is several times cheaper to build and unpack, millions of times per file. Tell the two
    kinds apart with ``item.__class__ is tuple``.

    Raises:
        HeaderError: See :func:`iter_rows`.
    """
    yield from _iterate(source, schema, file_name, max_line_bytes, chunk_bytes, records=True)


def _iterate(source: Source, schema: CsvSchema, file_name: str | None, max_line_bytes: int, chunk_bytes: int, *,
             records: bool) -> Iterator[Any]:
    """The one reading pipeline behind :func:`iter_rows` and :func:`iter_records`."""
    name = file_name or _source_name(source)
    checker = _RowChecker(schema, name)
    with _binary(source) as stream:
        batches = _line_batches(stream, name, max_line_bytes, chunk_bytes)
        if schema.header:
            batches = _skip_header(batches, schema, name)
        yield from _rows(batches, checker, _QuotedRecords(name, max_line_bytes), records=records)


def _skip_header(
    batches: Iterator[tuple[int, list[Any], bool]], schema: CsvSchema, file_name: str
) -> Iterator[tuple[int, list[Any], bool]]:
    first_no, lines, plain = next(batches, (1, [], False))
    _check_header(schema, lines[0] if lines else None, file_name)
    yield first_no + 1, lines[1:], plain
    yield from batches


def _rows(
    batches: Iterator[tuple[int, list[Any], bool]],
    checker: _RowChecker,
    quoted: _QuotedRecords,
    records: bool = False,
) -> Iterator[Any]:
    """Turn batches of physical lines into checked records: the hot loop, kept flat on purpose.

    With ``records``, a valid record comes out as a :data:`Record` tuple instead of a :class:`ValidRow`.
    """
    width, known, key_index, time_index = checker.width, checker.known, checker.key_index, checker.time_index
    time_known = known[time_index] if time_index is not None else None
    for first_no, lines, plain in batches:
        if not plain or quoted.pending:
            careful = _careful_rows(first_no, lines, checker, quoted)
            yield from map(_record, careful) if records else careful
            continue
        # Nearly every batch: only non-empty lines without quotes, so each line is a record of its own.
        # all(map(contains, ...)) is the per-column cache lookup of _careful_rows, run in C.
        for line_no, line in enumerate(lines, first_no):
            fields = line.split(",")
            if len(fields) == width and all(map(contains, known, fields)):
                key = None if key_index is None else fields[key_index]
                event_ms = None if time_known is None else time_known[fields[time_index]]
                if records:
                    yield line_no, line, key, event_ms
                else:
                    yield ValidRow(line_no, tuple(fields), line, key, event_ms)
            elif records:
                yield _record(checker.check(line_no, fields, line))
            else:
                yield checker.check(line_no, fields, line)
    while quoted.pending:
        out: list[Any] = []
        quoted.abort("unterminated quoted field at end of file", out)
        done = _finish(out, checker)
        yield from map(_record, done) if records else done


def _careful_rows(
    first_no: int, lines: list[Any], checker: _RowChecker, quoted: _QuotedRecords
) -> Iterator[ValidRow | RowError]:
    """Check a batch line by line: it may hold quotes, empty or unreadable lines, or continue a quoted record."""
    width, known, key_index, time_index = checker.width, checker.known, checker.key_index, checker.time_index
    time_known = known[time_index] if time_index is not None else None
    line_no = first_no - 1
    for line in lines:
        line_no += 1
        if quoted.pending or line.__class__ is not str or not line or '"' in line:
            yield from _slow_line(line_no, line, checker, quoted)
            continue
        fields = line.split(",")
        if len(fields) == width:
            for value, values in zip(fields, known):
                if value not in values:
                    break
            else:
                yield ValidRow(
                    line_no,
                    tuple(fields),
                    line,
                    None if key_index is None else fields[key_index],
                    None if time_known is None else time_known[fields[time_index]],
                )
                continue
        yield checker.check(line_no, fields, line)


def _record(item: ValidRow | RowError) -> Record | RowError:
    if item.__class__ is RowError:
        return item
    return item.line, item.text, item.key, item.event_time_ms


def _slow_line(line_no: int, line: Any, checker: _RowChecker, quoted: _QuotedRecords) -> list[ValidRow | RowError]:
    """Handle a line the fast path cannot: unreadable, empty, quoted, or inside an open quoted record."""
    out: list[Any] = []
    if isinstance(line, RowError):
        if quoted.pending:
            quoted.abort(f"quoted field not closed before unreadable line {line_no}", out)
        out.append(line)
    elif not line and not quoted.pending:
        out.append(checker.error(line_no, None, "empty line", line))
    else:
        quoted.feed(line_no, line, out)
    return _finish(out, checker)


def _finish(items: list[Any], checker: _RowChecker) -> list[ValidRow | RowError]:
    """Check the records the quoted-record joiner completed; pass its errors through."""
    done: list[ValidRow | RowError] = []
    for item in items:
        if isinstance(item, RowError):
            done.append(item)
            continue
        line_no, fields, text = item
        if fields is None:  # a plain line re-read after an aborted record
            done.extend(_slow_plain(line_no, text, checker))
        else:
            done.append(checker.check(line_no, fields, text))
    return done


def _slow_plain(line_no: int, text: str, checker: _RowChecker) -> list[ValidRow | RowError]:
    if not text:
        return [checker.error(line_no, None, "empty line", text)]
    return [checker.check(line_no, text.split(","), text)]


def validate_file(
    path: Source,
    schema: CsvSchema,
    *,
    max_errors: int = 100,
    file_name: str | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ValidationSummary:
    """Count a file's valid and bad records, keeping the first ``max_errors`` errors.

    Args:
        path: A path, or a file object opened in binary mode.
        schema: The declared layout.
        max_errors: How many RowErrors to keep (all are counted).
        file_name: The name to put in errors.
        max_line_bytes: See :func:`iter_rows`.

    Returns:
        The counts and the first errors.

    Raises:
        HeaderError: See :func:`iter_rows`.
    """
    summary = ValidationSummary()
    for item in iter_rows(path, schema, file_name=file_name, max_line_bytes=max_line_bytes):
        if item.__class__ is ValidRow:
            summary.valid += 1
        else:
            summary.bad += 1
            if len(summary.errors) < max_errors:
                summary.errors.append(item)
    return summary


__all__ = [
    "HeaderError",
    "Record",
    "RowError",
    "ValidRow",
    "ValidationSummary",
    "iter_records",
    "iter_rows",
    "parse_utc_ms",
    "validate_file",
]
