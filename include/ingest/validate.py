"""Streaming validation of a CSV file against its declared schema (``include.schema``).

Every record of a landed file comes out of :func:`iter_rows` either as a :class:`ValidRow`, whose ``text`` is the
normalised CSV line that becomes the Kafka message value, or as a :class:`RowError` that says which physical line
was bad, in which field, and why. The producer sends the first kind to the topic and the second to the dead-letter
topic; :func:`validate_file` only counts them.

Owns the row checks and the public API. How a file is cut into lines and records (chunks, BOM, UTF-8, quoting,
bounded memory) is :mod:`include.ingest.csv_lines`'s; what a field string means is the one value parser's,
:mod:`include.schema.values`, which the training decoder uses too, so a row this module accepts is read by
training with exactly the values it was accepted with. This module never writes anything, never holds more of a
file than the framing does, and never guesses a layout: the schema says what a valid row is.

Speed matters (the ingest must pass well over 200,000 rows/s through one process), so the common path is kept
short: a chunk's lines are split on commas, and each field is looked up in a per-column cache of strings already
known to be valid (string -> parsed value). A chunk with no quote, no empty line and no unreadable line at all
(nearly every chunk) skips even the per-line checks for those. Everything else (quotes, cache misses, errors)
takes a slower, careful path, where the value parser decides.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from operator import contains
from typing import Any, Iterator, Union

from include.ingest.csv_lines import (
    CHUNK_BYTES,
    MAX_LINE_BYTES,
    RAW_CHARS,
    LineBatch,
    QuotedRecords,
    RowError,
    Source,
    binary_stream,
    line_batches,
    source_name,
)
from include.schema import CsvSchema
from include.schema.values import (
    FieldInvalid,
    field_count_reason,
    field_reason,
    parse_timestamp,
    parse_utc_ms,
    parser_for,
)

# How many distinct valid strings each column remembers; bounds memory for columns with many distinct values
# (timestamps, floats), where values past the limit are simply checked the slow way every time.
KNOWN_VALUES_LIMIT = 16_384


class HeaderError(ValueError):
    """The file's first line is not the header its schema declares."""


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
        self.parsers = [parser_for(c) for c in schema.columns]
        # Per column: valid string -> its parsed value (a category column starts out knowing its categories).
        self.known: list[dict[str, Any]] = [{c: k for k, c in enumerate(col.categories)} for col in schema.columns]

    def error(self, line: int, field_name: str | None, reason: str, raw: str) -> RowError:
        return RowError(self.file, line, field_name, reason, raw[:RAW_CHARS])

    def check(self, line: int, fields: list[str], text: str) -> ValidRow | RowError:
        """Check one record exactly, filling the caches; the fast path in :func:`_rows` falls back to this."""
        if len(fields) != self.width:
            if not text.strip():
                return self.error(line, None, "empty line", text)
            return self.error(line, None, field_count_reason(self.width, len(fields)), text)
        for col, parse, known, value in zip(self.columns, self.parsers, self.known, fields):
            if value in known:
                continue
            try:
                parsed = parse(value)
            except FieldInvalid as exc:
                return self.error(line, col.name, field_reason(col, value, exc), text)
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
        return known if known is not None else parse_timestamp(text)


# ---------------------------------------------------------------------------------------------------------------
# Public API


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
    name = file_name or source_name(source)
    checker = _RowChecker(schema, name)
    with binary_stream(source) as stream:
        batches = line_batches(stream, name, max_line_bytes, chunk_bytes)
        if schema.header:
            batches = _skip_header(batches, schema, name)
        yield from _rows(batches, checker, QuotedRecords(name, max_line_bytes), records=records)


def _skip_header(
    batches: Iterator[LineBatch], schema: CsvSchema, file_name: str
) -> Iterator[LineBatch]:
    first_no, lines, plain = next(batches, (1, [], False))
    _check_header(schema, lines[0] if lines else None, file_name)
    yield first_no + 1, lines[1:], plain
    yield from batches


def _rows(
    batches: Iterator[LineBatch],
    checker: _RowChecker,
    quoted: QuotedRecords,
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
    first_no: int, lines: list[Any], checker: _RowChecker, quoted: QuotedRecords
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


def _slow_line(line_no: int, line: Any, checker: _RowChecker, quoted: QuotedRecords) -> list[ValidRow | RowError]:
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
