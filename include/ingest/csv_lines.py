"""CSV framing for ingest: bytes in, physical lines and records out, in bounded memory.

Owns how a landed file is cut into records: fixed-size binary chunks, physical lines (LF or CRLF; a last line
without a line end), a byte-order mark at the start of the file, UTF-8, overlong lines, and quoted records
(RFC 4180), the only records that may span physical lines. A line that cannot be read becomes a :class:`RowError`
here; what the fields of a record mean is :mod:`include.ingest.validate`'s business (and the value parser's), never
this module's.

It must never read a whole file into memory, nor hold more than one chunk plus ``max_line_bytes`` of it: an
overlong line is reported and skipped, not collected.
"""

from __future__ import annotations

import csv
import io
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, Iterator, Union

BOM = b"\xef\xbb\xbf"
# One read; 1 MiB keeps the per-chunk overhead negligible while memory stays small.
CHUNK_BYTES = 1 << 20
MAX_LINE_BYTES = 1_000_000
RAW_CHARS = 200

Source = Union[str, os.PathLike, BinaryIO]
# One chunk's lines: (first line number, lines, plain); a line is a str (no CR, no LF) or a RowError, and
# ``plain`` says that every line is a non-empty str without a quote.
LineBatch = tuple[int, list[Any], bool]


@dataclass(frozen=True)
class RowError:
    """One bad record.

    Attributes:
        file: The file's name, as given to :func:`include.ingest.validate.iter_rows`.
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


class QuotedRecords:
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


def line_batches(stream: BinaryIO, file_name: str, max_line_bytes: int, chunk_bytes: int) -> Iterator[LineBatch]:
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
# Sources


@contextmanager
def binary_stream(source: Source) -> Iterator[BinaryIO]:
    """The source as a binary stream: a path is opened (and closed after), a binary file object is used as is.

    Raises:
        TypeError: The source is a file opened in text mode.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as stream:
            yield stream
        return
    if isinstance(source, io.TextIOBase):
        raise TypeError("iter_rows needs a path or a file opened in binary mode ('rb')")
    yield source  # the caller's file: the caller closes it


def source_name(source: Source) -> str:
    """The name to put in errors: the path, or the file object's ``name``."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", "<stream>"))


__all__ = [
    "BOM",
    "CHUNK_BYTES",
    "MAX_LINE_BYTES",
    "RAW_CHARS",
    "LineBatch",
    "QuotedRecords",
    "RowError",
    "Source",
    "line_batches",
    "binary_stream",
    "source_name",
]
