"""Kafka message values as CSV rows: the training decoder's message framing, which is not about values.

Owns what makes a message one CSV row: a value may be bytes, bytearray or str (UTF-8); ``None`` (a tombstone)
is ``empty message (no value)``; one leading byte-order mark and any trailing CR/LF are dropped; a value with a
quote is read as one RFC 4180 record, as the ingest validator reads a quoted line; a CR or LF elsewhere is
``more than one line in one message``. Ingest never produces any of these but quoting. What the fields mean is
:mod:`include.schema.values`'s business, never this module's.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class PlainRows:
    """Rows without quotes, one line each, valid UTF-8; ``joined`` is ``b"\\n".join(rows)`` when already made."""

    rows: list[Any]
    index: np.ndarray
    joined: bytes | None = None


class _Unframed(ValueError):
    """A message that is not one CSV row; the message is the reason."""


def frame(values: Sequence[Any], errors: dict[int, str]) -> tuple[PlainRows, list[tuple[int, list[str]]]]:
    """Sort the messages into plain rows and quoted rows' fields; report the ones that are not one row.

    The common case (plain ASCII bytes, one line each) costs one join and four scans of the joined buffer.

    Args:
        values: The messages' values, in stream order.
        errors: Where a message that is not one row is reported (message index -> reason).

    Returns:
        The plain rows with their message indices, and ``(message index, fields)`` of each quoted row.
    """
    rows = values if isinstance(values, list) else list(values)
    try:
        joined = b"\n".join(rows)
    except TypeError:  # a None or a str among them
        joined = None
    if (
        joined is not None
        and joined.isascii()
        and joined.count(b"\n") == len(rows) - 1
        and b"\r" not in joined
        and b'"' not in joined
    ):
        return PlainRows(rows, np.arange(len(rows), dtype=np.int64), joined), []
    plain, index, quoted = [], [], []
    for i, value in enumerate(rows):
        try:
            row = _frame_one(value)
        except _Unframed as exc:
            errors[i] = str(exc)
            continue
        if isinstance(row, list):
            quoted.append((i, row))
        else:
            plain.append(row)
            index.append(i)
    return PlainRows(plain, np.array(index, dtype=np.int64)), quoted


def _frame_one(value: Any) -> bytes | list[str]:
    """One message as a plain row (UTF-8 bytes) or, when it has quotes, as its fields."""
    if value is None:
        raise _Unframed("empty message (no value)")
    if not isinstance(value, (str, bytes, bytearray, memoryview)):
        raise _Unframed(f"unsupported value type {type(value).__name__}")
    try:
        # Through bytes for a str too: a str may hold lone surrogates, which no UTF-8 message can.
        text = (value.encode("utf-8") if isinstance(value, str) else bytes(value)).decode("utf-8")
    except UnicodeError as exc:
        raise _Unframed(f"not valid UTF-8 ({exc.__class__.__name__}: {exc})") from None
    text = text.removeprefix("\ufeff").rstrip("\r\n")
    if '"' in text:
        # As the validator reads a quoted record: one RFC 4180 record, strictly.
        try:
            records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
        except csv.Error as exc:
            raise _Unframed(f"bad CSV quoting ({exc})") from None
        if len(records) != 1:
            raise _Unframed("more than one line in one message")
        return records[0]
    if "\n" in text or "\r" in text:
        raise _Unframed("more than one line in one message")
    return text.encode("utf-8")


__all__ = ["PlainRows", "frame"]
