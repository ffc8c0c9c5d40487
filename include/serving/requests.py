"""Requests in the declared schema, the label optional, as the model's raw input matrix.

A request is one CSV row in the schema's column order (as ingest and the observations topic have it), with or
without the label field; JSON instances (objects keyed by column name, TensorFlow Serving's row format) become such
rows first. Values are read by the training decoder (:func:`include.training.decode.decode_batch`), which decides
with the one value parser as ingest validation does: a row ingest would refuse is refused with ingest's reason.
A row without a label gets a placeholder the decoder accepts, and its label is reported as unknown.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from include.schema import Column, CsvSchema


@dataclass(frozen=True)
class Requests:
    """Decoded requests.

    Attributes:
        x: float32 ``(n_good, raw_width)`` raw matrix, rows in request order.
        good: int64 indices of the scored requests, ascending.
        labels: float32 ``(n_good,)`` the given labels, NaN where a request had none.
        errors: ``(request index, reason)`` for each refused request, ascending.
    """

    x: np.ndarray
    good: np.ndarray
    labels: np.ndarray
    errors: list[tuple[int, str]]


def _placeholder(column: Column) -> str:
    """A value the label column accepts, for rows sent without one."""
    if column.type == "category":
        return column.categories[0]
    return str(int(column.min)) if column.min is not None else "0"


def _to_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeError:
            return None
    return value if isinstance(value, str) else None


def _with_label(value: Any, n: int, at: int, fill: str) -> tuple[Any, bool]:
    """The row with ``fill`` inserted as field ``at`` when it has ``n - 1`` fields instead of ``n``; whether it had
    its label."""
    text = _to_text(value)
    if text is None:
        return value, True  # the decoder reports what is wrong with it
    body = text.removeprefix("\ufeff").rstrip("\r\n")
    if '"' not in body:
        fields = body.split(",")
    else:
        try:
            records = list(csv.reader(io.StringIO(body, newline=""), strict=True))
        except csv.Error:
            return value, True
        if len(records) != 1:
            return value, True
        fields = records[0]
    if len(fields) != n - 1:
        return value, True
    fields.insert(at, fill)
    if '"' not in body:
        return ",".join(fields), False
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue(), False


def decode_requests(schema: CsvSchema, values: Sequence[Any]) -> Requests:
    """Decode request rows (CSV, schema order, label optional) into the raw matrix.

    Args:
        schema: The declared schema.
        values: One CSV row each (str or UTF-8 bytes, no header).

    Returns:
        The :class:`Requests`; refused rows are in ``errors``, never raised.
    """
    from include.training.decode import decode_batch

    n, at = len(schema.columns), schema.label_index
    fill = _placeholder(schema.columns[at])
    completed, labelled = [], []
    for value in values:
        # The common case, decided without decoding: unquoted bytes whose field count is not one short (a row
        # with its label, or one the decoder refuses) go as they are, exactly as _with_label would pass them.
        if value.__class__ is bytes and b'"' not in value and value.count(b",") != n - 2:
            completed.append(value)
            labelled.append(True)
            continue
        row, has_label = _with_label(value, n, at, fill)
        completed.append(row.encode("utf-8") if isinstance(row, str) else row)
        labelled.append(has_label)
    decoded = decode_batch(schema, completed)
    has = np.asarray(labelled, dtype=bool)[decoded.good] if len(decoded.good) else np.zeros(0, bool)
    labels = np.where(has, decoded.y, np.nan).astype(np.float32)
    return Requests(x=decoded.x, good=decoded.good, labels=labels, errors=decoded.errors)


def instance_rows(schema: CsvSchema, instances: Sequence[Any]) -> tuple[list[str | None], list[tuple[int, str]]]:
    """JSON instances (objects keyed by column name, the label optional) as CSV rows in the schema's order.

    Values are written as their text (a number as JSON gives it), so the one value parser decides on them.

    Returns:
        The rows (None where an instance is refused) and ``(index, reason)`` for each refused instance.
    """
    rows: list[str | None] = []
    errors: list[tuple[int, str]] = []
    names = schema.names
    required = [c.name for c in schema.columns if c.name != schema.label]
    for i, instance in enumerate(instances):
        if not isinstance(instance, Mapping):
            rows.append(None)
            errors.append((i, f"instance {i} is not an object keyed by column name"))
            continue
        unknown = sorted(set(instance) - set(names))
        missing = [name for name in required if name not in instance]
        if unknown or missing:
            rows.append(None)
            problem = f"unknown column(s) {unknown}" if unknown else f"missing field(s) {missing}"
            errors.append((i, f"{problem}; the columns are {list(names)} ({schema.label!r} optional)"))
            continue
        fields = [_field_text(instance[name]) for name in names if name in instance]
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(fields)
        rows.append(out.getvalue())
    return rows, errors


def _field_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return ""
    return value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
