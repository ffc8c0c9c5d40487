"""Vectorised fast paths of the value parser: many fields at once, for the common forms only.

Each reader takes a byte buffer and the ``[start, end)`` bounds of many fields in it, and returns a value and an
``accepted`` flag per field. A reader accepts only strings it proves valid under the scalar rules of
:mod:`include.schema.values`, with exactly the value those rules give; every other field is left unaccepted, and
the caller must hand it to the scalar parser, which accepts it or refuses it with the reason. So a fast path
changes speed, never results: it is a strict subset of the one rule, not a second rule. What the fast paths take:

* numbers: unsigned integers of up to 8 digits read 8 bytes at a time (SWAR), and ``-?digits`` (int columns) or
  ``-?digits.digits`` with at most 15 digits (float columns) read character by character, within ``[min, max]``;
* categories: a declared category's exact UTF-8 bytes;
* timestamps: the canonical ``YYYY-MM-DDTHH:MM:SSZ`` of a real date and time.

This module never refuses a field (only the scalar parser gives reasons) and never frames records.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from include.schema.declaration import Column

# Bytes the buffer must hold before its first field: an 8-byte window ending at any field stays inside it.
PAD = 8

_MAX_FAST_DIGITS = 15  # below 2**53: the mantissa is summed exactly in float64
_MAX_FAST_CHARS = _MAX_FAST_DIGITS + 2  # a sign and a point
_POW10 = 10.0 ** np.arange(0, 23)
_DOT, _MINUS, _ZERO = 46, 45, 48
_MAX_GATHER = 64  # longest category compared by gathering its bytes for every field of its length

_U8 = np.dtype("<u8")
_KEEP_LAST = np.array([((1 << (8 * k)) - 1) << (8 * (8 - k)) if k else 0 for k in range(9)], dtype=_U8)
_C30, _CF0, _C06, _C10 = (np.uint64(int(b * 8, 16)) for b in ("30", "F0", "06", "10"))


class NumberReader:
    """Reads the fields of several int and float columns at once.

    Args:
        columns: The numeric columns, in the order of the bounds' second axis.
    """

    def __init__(self, columns: Sequence[Column]) -> None:
        self.is_int = np.array([c.type == "int" for c in columns], dtype=bool)
        self.lo = np.array([c.min for c in columns], dtype=np.float64)
        self.hi = np.array([c.max for c in columns], dtype=np.float64)

    def __call__(self, buf: np.ndarray, buf_bytes: bytes, starts: np.ndarray,
                 ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Read the ``(rows, columns)`` fields ``buf[starts:ends]``.

        Args:
            buf: ``buf_bytes`` as uint8, with at least :data:`PAD` bytes before the first field.
            buf_bytes: The buffer.
            starts: Each field's first byte, shape ``(rows, len(columns))``.
            ends: Each field's end (exclusive), same shape.

        Returns:
            ``(values float64, accepted bool)`` of that shape; an accepted value is the scalar rule's, exactly.
        """
        shape = starts.shape
        starts, ends = starts.ravel(), ends.ravel()
        values, proven = _unsigned_integers(buf, buf_bytes, starts, ends)
        rest = np.flatnonzero(~proven)
        if rest.size:
            is_int = self.is_int[rest % shape[1]]  # fields are row-major: the column is the index mod width
            values[rest], proven[rest] = _decimals(buf, starts[rest], ends[rest], is_int)
        values, proven = values.reshape(shape), proven.reshape(shape)
        return values, proven & (values >= self.lo) & (values <= self.hi)


def _unsigned_integers(buf: np.ndarray, buf_bytes: bytes, starts: np.ndarray,
                       ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Read 1 to 8 ASCII digits, by far the common case, 8 bytes at a time.

    The field's last 8 bytes are one little-endian uint64; the bytes before the field are masked off, every byte
    checked to be a digit and the digits combined pairwise (SWAR): about ten numpy passes over the fields whatever
    their length, and no Python object per field.
    """
    lens = ends - starts
    words = np.ndarray(shape=(buf.size - 7,), dtype=_U8, buffer=buf_bytes, strides=(1,))[ends - 8]
    y = (words ^ _C30) & _KEEP_LAST[np.minimum(lens, 8)]
    ok = ((y & _CF0) == 0) & (((y + _C06) & _C10) == 0) & (lens > 0) & (lens <= 8)
    y = (y * np.uint64(10) + (y >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    y = (y * np.uint64(100) + (y >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    y = (y * np.uint64(10000) + (y >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    return y.astype(np.float64), ok


def _decimals(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
              is_int: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Read ``-?digits`` (int fields) or ``-?(digits[.digits]|.digits)`` (float fields) of at most 15 digits.

    Works back from each field's last character, one numpy pass per character position over the fields still
    that long. The mantissa is an exact integer below 2**53 and the power of ten is exact, so the one correctly
    rounded division gives what ``float()`` gives for the text.
    """
    nf = starts.size
    lens = ends - starts
    mant = np.zeros(nf, dtype=np.float64)
    ndig = np.zeros(nf, dtype=np.int64)
    frac = np.zeros(nf, dtype=np.int64)
    has_dot = np.zeros(nf, dtype=bool)
    neg = np.zeros(nf, dtype=bool)
    ok = (lens > 0) & (lens <= _MAX_FAST_CHARS)
    act = np.flatnonzero(ok)
    for j in range(_MAX_FAST_CHARS):
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
        ok[a[has_dot[a] | is_int[a]]] = False  # a second point, or a point in an integer
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
    # int('-0') is 0, float('-0') is -0.0: adding 0.0 turns -0.0 into 0.0 and leaves everything else as it is.
    vals[is_int] += 0.0
    return vals, ok


class CategoryReader:
    """Reads a category column's fields by their exact UTF-8 bytes.

    Args:
        column: A category column.
    """

    def __init__(self, column: Column) -> None:
        # Last to first, so that the first of two equal declared categories wins, as in the scalar parser.
        names = [(k, c.encode("utf-8")) for k, c in enumerate(column.categories)]
        self.names = [(k, raw, np.frombuffer(raw, dtype=np.uint8)) for k, raw in names[::-1]]

    def __call__(self, buf: np.ndarray, buf_bytes: bytes, starts: np.ndarray,
                 ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(index int64, accepted bool)`` per field ``buf[start:end]``.

        Each category is compared byte for byte with the fields of its length, in numpy: a few passes per
        category instead of a Python lookup per field.
        """
        lens = ends - starts
        index = np.full(starts.size, -1, dtype=np.int64)
        for k, raw, name in self.names:
            rows = np.flatnonzero(lens == name.size)
            if rows.size == 0:
                continue
            if name.size > _MAX_GATHER:  # a long category: compare in Python rather than gather a big matrix
                same = np.array([buf_bytes[s:s + name.size] == raw for s in starts[rows].tolist()], dtype=bool)
            else:
                same = (buf[starts[rows, None] + np.arange(name.size)] == name).all(axis=1)
            index[rows[same]] = k
        return index, index >= 0


_TS_LEN = 20  # YYYY-MM-DDTHH:MM:SSZ
_TS_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_TS_PUNCT = [4, 7, 10, 13, 16, 19]
_TS_PUNCT_CHARS = np.frombuffer(b"--T::Z", dtype=np.uint8)
_DAYS_IN_MONTH = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_MS_PER_DAY = 86_400_000


def read_timestamps(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Read canonical ``YYYY-MM-DDTHH:MM:SSZ`` timestamps as epoch milliseconds.

    Returns:
        ``(epoch ms int64, accepted bool)`` per field ``buf[start:end]``; any other form (fractions of a second,
        ``+00:00``, a space for the ``T``...) is left to the scalar parser.
    """
    ms = np.zeros(starts.size, dtype=np.int64)
    accepted = (ends - starts) == _TS_LEN
    idx = np.flatnonzero(accepted)
    if idx.size == 0:
        return ms, accepted
    chars = buf[starts[idx, None] + np.arange(_TS_LEN)]
    digits = chars[:, _TS_DIGITS] - np.uint8(_ZERO)  # a byte below '0' wraps round to above 9
    good = (chars[:, _TS_PUNCT] == _TS_PUNCT_CHARS).all(axis=1) & (digits <= 9).all(axis=1)
    # Two digits at a time: century, year of century, month, day, hour, minute, second.
    pairs = digits[:, 0::2].astype(np.int64) * 10 + digits[:, 1::2]
    year = pairs[:, 0] * 100 + pairs[:, 1]
    month, day, hh, mi, ss = pairs[:, 2], pairs[:, 3], pairs[:, 4], pairs[:, 5], pairs[:, 6]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _DAYS_IN_MONTH[np.minimum(month, 12)] - ((month == 2) & ~leap)
    good &= (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    good &= (hh <= 23) & (mi <= 59) & (ss <= 59)
    ms[idx] = _days_from_civil(year, month, day) * _MS_PER_DAY + ((hh * 60 + mi) * 60 + ss) * 1000
    accepted[idx[~good]] = False
    return ms, accepted


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil, vectorised)."""
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


__all__ = ["PAD", "CategoryReader", "NumberReader", "read_timestamps"]
