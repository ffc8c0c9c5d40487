"""Scoring a CSV file (or stdin) with a model version: the work behind ``python -m include predict``.

The file is read by the ingest validator itself (:func:`include.ingest.validate.iter_rows`), so a row is refused
here exactly when ingest would refuse it, with ingest's report of it (file, line, field, reason, raw: the record
ingest sends to the dead-letter topic), and no refused row is ever scored. The label column is optional: a file
whose header (or, for a headerless schema, whose first record) lacks it is read by the same validator over the
declared columns without the label. Valid rows are scored in batches with :class:`include.serving.model.LoadedModel`
and written with their probability and predicted label, as CSV or JSON lines; refused rows go, one JSON line each,
to the errors stream. This module never changes the registry and never writes to Kafka.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from include.ingest.csv_lines import BOM, MAX_LINE_BYTES, RowError
from include.ingest.validate import ValidRow, iter_rows
from include.schema import CsvSchema
from include.serving.model import LoadedModel
from include.serving.requests import decode_requests

FORMATS = ("csv", "jsonl")
BATCH_ROWS = 4096


class PredictInputError(ValueError):
    """The input cannot be read as the schema's layout at all (its header is neither form of the schema's), or an
    output would overwrite it."""


@dataclass
class PredictSummary:
    """What a prediction run did."""

    source: str
    model_name: str
    version: int
    scored: int = 0
    refused: int = 0
    labelled: bool = True

    def line(self) -> str:
        """The one summary line."""
        return (f"predict: {self.scored} rows scored, {self.refused} refused, from {self.source} "
                f"by model {self.model_name!r} version {self.version}")


class _Prefixed:
    """A binary stream that replays ``head`` before the rest of ``stream`` (the first line, read to pick a layout)."""

    def __init__(self, head: bytes, stream: BinaryIO, name: str) -> None:
        self.head, self.stream, self.name = head, stream, name

    def read(self, size: int = -1) -> bytes:
        if self.head:
            data, self.head = self.head, b""
            return data
        return self.stream.read(size)


def label_free(schema: CsvSchema) -> CsvSchema:
    """The schema's layout without its label column (what the validator checks a label-less file against)."""
    return dataclasses.replace(schema, columns=tuple(c for c in schema.columns if c.name != schema.label))


def _fields(first: bytes) -> list[str]:
    text = first.removeprefix(BOM).decode("utf-8", errors="replace").rstrip("\r\n")
    return next(csv.reader([text]), []) if '"' in text else text.split(",")


def choose_layout(schema: CsvSchema, first: bytes, file_name: str) -> CsvSchema:
    """The layout to validate with: the schema's, or the label-free one when the first line says so.

    Raises:
        PredictInputError: The schema declares a header and the first line is neither form of it.
    """
    fields = _fields(first)
    free = label_free(schema)
    if not schema.header:
        return free if len(fields) == len(free.columns) else schema
    if tuple(fields) == free.names:
        return free
    if tuple(fields) == schema.names or not first:
        return schema  # (an empty input gets ingest's own "file is empty" error)
    raise PredictInputError(f"{file_name}: expected the header {schema.header_line()!r} or, without the label, "
                            f"{free.header_line()!r}; found {','.join(fields)[:200]!r}")


class _Writer:
    """Writes scored rows as CSV or JSON lines."""

    def __init__(self, out: TextIO, fmt: str, names: tuple[str, ...]) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}: one of {FORMATS}")
        self.out, self.fmt, self.names = out, fmt, names
        if fmt == "csv":
            self.csv = csv.writer(out, lineterminator="\n")
            self.csv.writerow(("line", *names, "probability", "predicted"))

    def rows(self, rows: list[ValidRow], probabilities: list[float]) -> None:
        if self.fmt == "csv":
            self.csv.writerows((r.line, *r.fields, f"{p:.6f}", int(p >= 0.5)) for r, p in zip(rows, probabilities))
            return
        names = self.names
        self.out.writelines(
            json.dumps({"line": r.line, **dict(zip(names, r.fields)), "probability": round(p, 6),
                        "predicted": int(p >= 0.5)}) + "\n"
            for r, p in zip(rows, probabilities))


def predict_stream(stream: BinaryIO, schema: CsvSchema, model: LoadedModel, *, model_name: str, file_name: str,
                   out: TextIO, errors: TextIO, fmt: str = "csv", batch_rows: int = BATCH_ROWS) -> PredictSummary:
    """Score every valid row of ``stream`` with ``model``; report every refused row.

    Args:
        stream: The CSV input, binary.
        schema: The declared schema (the label column optional in the input).
        model: The version to score with.
        model_name: Its model name (for the summary).
        file_name: The input's name in error reports.
        out: Where scored rows go.
        errors: Where refused rows go (one JSON object per line: file, line, field, reason, raw).
        fmt: ``csv`` or ``jsonl``.
        batch_rows: Rows scored per model call.

    Raises:
        PredictInputError: The header is neither form of the schema's.
        HeaderError: The input is empty (ingest's error).
    """
    first = stream.readline(MAX_LINE_BYTES + 1)
    layout = choose_layout(schema, first, file_name)
    summary = PredictSummary(file_name, model_name, model.version, labelled=layout is schema)
    writer = _Writer(out, fmt, layout.names)
    batch: list[ValidRow] = []
    for item in iter_rows(_Prefixed(first, stream, file_name), layout, file_name=file_name):
        if item.__class__ is ValidRow:
            batch.append(item)
            if len(batch) >= batch_rows:
                _score(batch, schema, model, writer, errors, summary)
                batch = []
        else:
            _refuse(item, errors, summary)
    _score(batch, schema, model, writer, errors, summary)
    return summary


def _score(batch: list[ValidRow], schema: CsvSchema, model: LoadedModel, writer: _Writer, errors: TextIO,
           summary: PredictSummary) -> None:
    if not batch:
        return
    decoded = decode_requests(schema, [row.text for row in batch])
    # The validator accepted these rows and the decoder reads with the same parser, so this stays empty; if it
    # ever is not, the row is reported, never dropped silently.
    for index, reason in decoded.errors:
        row = batch[index]
        _refuse(RowError(summary.source, row.line, None, reason, row.text[:200]), errors, summary)
    good = [batch[i] for i in decoded.good.tolist()]
    writer.rows(good, model.predict(decoded.x).tolist())
    summary.scored += len(good)


def _refuse(error: RowError, errors: TextIO, summary: PredictSummary) -> None:
    errors.write(json.dumps(error.as_dict()) + "\n")
    summary.refused += 1



def run_predict(settings: Any, source: str, *, model_name: str, version: int | None, fmt: str,
                output: Path | None, errors_path: Path | None, stdin: BinaryIO, stdout: TextIO,
                stderr: TextIO) -> PredictSummary:
    """Load the version (the champion when ``version`` is None) and score ``source`` (a path, or ``-`` for stdin).

    Scored rows go to ``output`` (or ``stdout``), refused rows to ``errors_path`` (or ``stderr``).

    Raises:
        LifecycleError: No champion, no such version, or it reads another schema.
        HistoryNotReady: The history database does not exist yet.
        FileNotFoundError: ``source`` does not exist.
    """
    from include.lifecycle.registry import Registry
    from include.schema import load_schema
    from include.serving.follower import load_version
    from include.training.model import configure_tensorflow

    for path in (output, errors_path):
        if path is not None and source != "-" and path.resolve() == Path(source).resolve():
            raise PredictInputError(f"{path} is the input file: writing it would destroy the rows being read")
    schema = load_schema(settings.schema_name)
    registry = Registry(settings, migrate=False)
    model_name, _ = registry.served(model_name)  # the model's lineage in the live generation
    info = registry.resolve(model_name, version)
    configure_tensorflow()
    model = load_version(registry, model_name, info.version, schema_id=schema.id)
    with ExitStack() as stack:
        stream = stdin if source == "-" else stack.enter_context(open(source, "rb"))
        out = stack.enter_context(open(output, "w", encoding="utf-8", newline="")) if output else stdout
        errors = stack.enter_context(open(errors_path, "w", encoding="utf-8")) if errors_path else stderr
        return predict_stream(stream, schema, model, model_name=model_name,
                              file_name="<stdin>" if source == "-" else source, out=out, errors=errors, fmt=fmt)
