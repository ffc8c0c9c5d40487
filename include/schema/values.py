"""The one value parser: what a CSV field string means for its declared column.

Owns the scalar rules, one per column type, the value each gives and the reasons a refused field is reported with.
Ingest validation (:mod:`include.ingest.validate`), the training decoder (:mod:`include.training.decode`) and
(later) prediction decide with this module and nothing else, so that what ingest lets into the topic is exactly
what training reads, with the same value. Their vectorised fast paths (:mod:`include.schema.columns`) may only
accept strings these rules accept, with the value these rules give; anything they cannot prove valid comes here.

The rules (a field is never stripped, repaired or guessed at):

* ``int``: an optional ``+`` or ``-`` and 1 to 30 ASCII digits (leading zeros allowed), within ``[min, max]``;
  the value is the int.
* ``float``: ``[+-]?([0-9]+.?[0-9]*|.[0-9]+)([eE][+-]?[0-9]+)?`` in ASCII (no spaces, ``nan``, ``inf`` or
  underscores), whose float is within ``[min, max]``; the value is that float.
* ``category``: exactly one of the declared categories (case and spaces count); the value is its index.
* ``timestamp``: ISO 8601 as :meth:`datetime.datetime.fromisoformat` reads it, with a zero UTC offset (``Z`` or
  ``+00:00``); a naive time is refused. The value is epoch milliseconds (rounded down).

This module never frames records (byte-order marks, line ends and CSV quoting belong to the callers), never reads
files and never talks to Kafka.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Callable, Union

from include.schema.declaration import Column

MAX_INT_DIGITS = 30
# [0-9], not \d: \d also matches non-ASCII digits ('٣'), which float() would read.
FLOAT_SYNTAX = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
_ZERO = timedelta(0)

Value = Union[int, float]
Parser = Callable[[str], Value]


class FieldInvalid(ValueError):
    """A field string is not a valid value of its column; the message is the reason (``is above max 19``)."""


def field_reason(column: Column, text: str, problem: FieldInvalid) -> str:
    """The full reason for a refused field, as ingest and the decoder both report it.

    Args:
        column: The field's column.
        text: The field string as it was read.
        problem: What the column's parser raised.

    Returns:
        E.g. ``field 'x' = '25' is above max 19`` (the field's text cut to 40 characters).
    """
    return f"field {column.name!r} = {text[:40]!r} {problem}"


def field_count_reason(expected: int, found: int) -> str:
    """The reason for a record with the wrong number of fields (``expected 6 fields, found 7``)."""
    return f"expected {expected} fields, found {found}"


def parser_for(column: Column) -> Parser:
    """The scalar parser of one column: text in, value out, :class:`FieldInvalid` for anything else.

    Args:
        column: A declared column.

    Returns:
        A function of the field string returning an int (``int`` columns, category indices, epoch milliseconds of
        a timestamp) or a float (``float`` columns).
    """
    if column.type == "int":
        return _int_parser(column)
    if column.type == "float":
        return _float_parser(column)
    if column.type == "category":
        return _category_parser(column)
    return parse_timestamp


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _range_check(column: Column) -> Callable[[Value], None]:
    lo, hi = column.min, column.max
    below = f"is below min {_number_text(lo)}" if lo is not None else ""
    above = f"is above max {_number_text(hi)}" if hi is not None else ""

    def check(value: Value) -> None:
        if lo is not None and value < lo:
            raise FieldInvalid(below)
        if hi is not None and value > hi:
            raise FieldInvalid(above)

    return check


def _int_parser(column: Column) -> Parser:
    in_range = _range_check(column)

    def parse(text: str) -> int:
        # int() alone would also take ' 7', '1_000' and non-ASCII digits; a CSV integer is plain ASCII digits.
        digits = text[1:] if text[:1] in ("-", "+") else text
        if not (digits.isascii() and digits.isdigit()):
            raise FieldInvalid("is not an integer")
        if len(digits) > MAX_INT_DIGITS:
            # int() refuses strings over 4,300 digits, and no declared range needs 30; say so instead.
            raise FieldInvalid(f"has {len(digits)} digits, out of any declared range")
        value = int(text)
        in_range(value)
        return value

    return parse


def _float_parser(column: Column) -> Parser:
    in_range = _range_check(column)

    def parse(text: str) -> float:
        # float() alone would also take 'nan', 'inf', '1_0', surrounding spaces and non-ASCII digits.
        if FLOAT_SYNTAX.fullmatch(text) is None:
            raise FieldInvalid("is not a number")
        value = float(text)
        in_range(value)
        return value

    return parse


def _category_parser(column: Column) -> Parser:
    index = {name: k for k, name in enumerate(column.categories)}
    refusal = f"is not one of {', '.join(column.categories)}"

    def parse(text: str) -> int:
        k = index.get(text)
        if k is None:
            raise FieldInvalid(refusal)
        return k

    return parse


def parse_timestamp(text: str) -> int:
    """Read an ISO 8601 UTC timestamp (``2026-01-05T13:00:00Z``) as epoch milliseconds, rounded down.

    Raises:
        FieldInvalid: The text is not ISO 8601, has no time zone, or is not in UTC.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FieldInvalid("is not an ISO 8601 timestamp (e.g. 2026-01-05T13:00:00Z)") from None
    if moment.tzinfo is None:
        raise FieldInvalid("has no time zone; expected UTC, e.g. 2026-01-05T13:00:00Z")
    if moment.utcoffset() != _ZERO:
        raise FieldInvalid("is not in UTC; expected a Z or +00:00 suffix")
    return (moment - _EPOCH) // _ONE_MS


def parse_utc_ms(text: str) -> int:
    """:func:`parse_timestamp` for callers outside a row: the error names the text.

    Raises:
        ValueError: The text is not an ISO 8601 timestamp in UTC (e.g. ``'x' is not an ISO 8601 timestamp ...``).
    """
    try:
        return parse_timestamp(text)
    except FieldInvalid as exc:
        raise ValueError(f"{text!r} {exc}") from None


__all__ = [
    "FLOAT_SYNTAX",
    "MAX_INT_DIGITS",
    "FieldInvalid",
    "Parser",
    "Value",
    "field_count_reason",
    "field_reason",
    "parse_timestamp",
    "parse_utc_ms",
    "parser_for",
]
