"""Tests for include.ingest.validate: every bad-row kind, encodings and line ends, bounded memory, the blog file."""

from __future__ import annotations

import io
import tracemalloc
from datetime import datetime, timezone

import pytest

from include.demo.reference import BLOG_FILE
from include.schema import load_schema, schema_from_dict
from include.ingest.validate import HeaderError, RowError, ValidRow, iter_rows, validate_file

HEADER = b"observed_at,shop_id,shop_type,x,y,busy\n"
GOOD = b"2026-01-05T13:00:00Z,1,grocery,3,4,1"
GOOD_TEXT = GOOD.decode()
BOM = b"\xef\xbb\xbf"

# A made-up schema for what the drone schema cannot show: float columns and a category holding a newline.
NOTES = schema_from_dict(
    {
        "id": "notes-test",
        "header": False,
        "label": "busy",
        "columns": [
            {"name": "note", "type": "category", "categories": ["plain", "two\nlines", 'say "hi"', "crème"]},
            {"name": "weight", "type": "float", "min": 0, "max": 10},
            {"name": "busy", "type": "int", "min": 0, "max": 1},
        ],
    }
)


def _schema(name):
    return NOTES if name == "notes" else load_schema(name)


def _run(data: bytes, schema_name: str = "drone", **kwargs) -> list[ValidRow | RowError]:
    return list(iter_rows(io.BytesIO(data), _schema(schema_name), file_name="t.csv", **kwargs))


def _bad(old: bytes, new: bytes) -> bytes:
    """A file whose one data row is GOOD with ``old`` replaced by ``new``."""
    return HEADER + GOOD.replace(old, new) + b"\n"


def _outcome(items):
    valid = [i.line for i in items if isinstance(i, ValidRow)]
    errors = [(i.line, i.field, i.reason) for i in items if isinstance(i, RowError)]
    return valid, errors


# (id, schema, file bytes, iter_rows kwargs, lines of valid rows, expected errors as (line, field, reason part))
CASES = [
    ("lf", "drone", HEADER + GOOD + b"\n" + GOOD + b"\n", {}, [2, 3], []),
    ("crlf", "drone", (HEADER + GOOD + b"\n" + GOOD + b"\n").replace(b"\n", b"\r\n"), {}, [2, 3], []),
    ("bom", "drone", BOM + HEADER + GOOD + b"\n", {}, [2], []),
    ("bom-crlf-no-final-newline", "drone", BOM + HEADER.replace(b"\n", b"\r\n") + GOOD, {}, [2], []),
    ("header-only", "drone", HEADER, {}, [], []),
    ("quoted-fields", "drone", HEADER + b'"2026-01-05T13:00:00Z","1","grocery",3,4,"1"\n', {}, [2], []),
    ("quoted-newline", "notes", b'plain,1.5,0\n"two\nlines",2,1\nplain,3,1\n', {}, [1, 2, 4], []),
    ("quoted-newline-crlf", "notes", b'plain,1.5,0\r\n"two\r\nlines",2,1\r\nplain,3,1\r\n', {}, [1, 2, 4], []),
    ("utf8-multibyte", "notes", "crème,1,1\ncrème,2,1\n".encode(), {}, [1, 2], []),
    ("escaped-quote", "notes", b'"say ""hi""",1,1\n', {}, [1], []),
    (
        "quoted-newline-bad-field",
        "drone",
        HEADER + b'2026-01-05T13:00:00Z,1,"groc\nery",3,4,1\n' + GOOD + b"\n",
        {},
        [4],
        [(2, "shop_type", "is not one of grocery")],
    ),
    ("too-many-fields", "drone", HEADER + GOOD + b",9\n", {}, [], [(2, None, "expected 6 fields, found 7")]),
    ("too-few-fields", "drone", HEADER + b"2026-01-05T13:00:00Z,1,grocery\n", {}, [], [(2, None, "found 3")]),
    ("int-not-numeric", "drone", _bad(b",3,", b",abc,"), {}, [], [(2, "x", "not an integer")]),
    ("int-with-space", "drone", _bad(b",3,", b", 3,"), {}, [], [(2, "x", "not an integer")]),
    ("int-is-float", "drone", _bad(b",3,", b",3.0,"), {}, [], [(2, "x", "not an integer")]),
    ("int-with-5000-digits", "drone", _bad(b",3,", b"," + b"9" * 5000 + b","), {}, [], [(2, "x", "5000 digits")]),
    ("float-not-numeric", "notes", b"plain,heavy,1\n", {}, [], [(1, "weight", "'heavy' is not a number")]),
    ("float-nan", "notes", b"plain,nan,1\n", {}, [], [(1, "weight", "is not a number")]),
    ("float-above-max", "notes", b"plain,10.5,1\n", {}, [], [(1, "weight", "'10.5' is above max 10")]),
    # float() reads non-ASCII digits; a CSV number is ASCII (include.schema.values).
    ("float-non-ascii-digit", "notes", "plain,٣,1\n".encode(), {}, [], [(1, "weight", "'٣' is not a number")]),
    ("int-with-plus", "drone", _bad(b",3,", b",+3,"), {}, [2], []),
    ("above-max", "drone", _bad(b",3,", b",25,"), {}, [], [(2, "x", "field 'x' = '25' is above max 19")]),
    ("below-min", "drone", _bad(b",4,", b",-1,"), {}, [], [(2, "y", "'-1' is below min 0")]),
    ("label-out-of-range", "drone", HEADER + GOOD[:-1] + b"2\n", {}, [], [(2, "busy", "above max 1")]),
    ("unknown-category", "drone", _bad(b"grocery", b"bakery"), {}, [], [(2, "shop_type", "'bakery' is not one of")]),
    (
        "empty-line",
        "drone",
        HEADER + GOOD + b"\n\n" + GOOD + b"\n",
        {},
        [2, 4],
        [(3, None, "empty line")],
    ),
    ("empty-line-crlf", "drone", HEADER + GOOD + b"\r\n\r\n", {}, [2], [(3, None, "empty line")]),
    ("blank-line", "drone", HEADER + b"   \n" + GOOD + b"\n", {}, [3], [(2, None, "empty line")]),
    (
        "unterminated-quote-at-eof",
        "drone",
        HEADER + GOOD + b"\n" + b'2026-01-05T13:00:00Z,1,"grocery,3,4,1\n' + GOOD + b"\n",
        {},
        [2, 4],
        [(3, None, "unterminated quoted field")],
    ),
    (
        "malformed-quote",
        "drone",
        HEADER + b'2026-01-05T13:00:00Z,1,"grocery"x,3,4,1\n' + GOOD + b"\n",
        {},
        [3],
        [(2, None, "malformed quoting")],
    ),
    (
        "oversized-line",
        "drone",
        HEADER + GOOD + b"\n" + b"9" * 5000 + b"\n" + GOOD + b"\n",
        {"max_line_bytes": 100},
        [2, 4],
        [(3, None, "longer than 100 bytes")],
    ),
    (
        "oversized-line-across-chunks",
        "drone",
        HEADER + GOOD + b"\n" + b"9" * 5000 + b"\n" + GOOD + b"\n",
        {"max_line_bytes": 100, "chunk_bytes": 64},
        [2, 4],
        [(3, None, "longer than 100 bytes")],
    ),
    (
        "oversized-last-line",
        "drone",
        HEADER + GOOD + b"\n" + b"9" * 5000,
        {"max_line_bytes": 100, "chunk_bytes": 64},
        [2],
        [(3, None, "longer than 100 bytes")],
    ),
    (
        "unterminated-quote-too-long",
        "drone",
        HEADER + b'2026-01-05T13:00:00Z,1,"grocery\n' + (GOOD + b"\n") * 10,
        {"max_line_bytes": 200},
        list(range(3, 13)),
        [(2, None, "not closed within 200")],
    ),
    (
        "invalid-utf8",
        "drone",
        _bad(b"grocery", b"groc\xffery") + GOOD + b"\n",
        {},
        [3],
        [(2, None, "invalid UTF-8 at byte 28")],
    ),
    ("bad-timestamp", "drone", _bad(b"2026-01-05T13:00:00Z", b"yesterday"), {}, [], [(2, "observed_at", "not an ISO")]),
    ("timestamp-no-zone", "drone", _bad(b"Z,", b","), {}, [], [(2, "observed_at", "no time zone")]),
    ("timestamp-not-utc", "drone", _bad(b"Z,", b"+01:00,"), {}, [], [(2, "observed_at", "not in UTC")]),
    ("timestamp-impossible", "drone", _bad(b"01-05", b"02-30"), {}, [], [(2, "observed_at", "not an ISO")]),
    ("timestamp-offset-utc", "drone", _bad(b"Z,", b"+00:00,"), {}, [2], []),
]

CASE_FIELDS = ("schema", "data", "kwargs", "valid", "errors")


@pytest.mark.parametrize(CASE_FIELDS, [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_iter_rows_cases(schema, data, kwargs, valid, errors):
    got_valid, got_errors = _outcome(_run(data, schema, **kwargs))
    assert got_valid == valid
    assert [(line, field) for line, field, _ in got_errors] == [(line, field) for line, field, _ in errors]
    for (_, _, reason), (_, _, part) in zip(got_errors, errors):
        assert part in reason


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 17, 64])
@pytest.mark.parametrize(CASE_FIELDS, [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_chunk_size_does_not_change_results(chunk_bytes, schema, data, kwargs, valid, errors):
    kwargs = {**kwargs, "chunk_bytes": chunk_bytes}
    assert _run(data, schema, **kwargs) == _run(data, schema, **{k: v for k, v in kwargs.items() if k != "chunk_bytes"})


def test_valid_row_is_normalised_with_key_and_event_time():
    data = BOM + (HEADER + b'"2026-01-05T13:00:00Z",1,"grocery",3,4,1\n' + GOOD + b"\n").replace(b"\n", b"\r\n")
    rows = _run(data)
    expected_ms = int(datetime(2026, 1, 5, 13, tzinfo=timezone.utc).timestamp() * 1000)
    for row in rows:
        assert row.text == GOOD_TEXT
        assert row.fields == tuple(GOOD_TEXT.split(","))
        assert row.key == "1"
        assert row.event_time_ms == expected_ms


def test_quoted_newline_text_is_requoted():
    (row,) = _run(b'"two\r\nlines",2,1\r\n', "notes")
    assert row.line == 1
    assert row.fields == ("two\nlines", "2", "1")
    assert row.text == '"two\nlines",2,1'


def test_row_error_raw_is_truncated():
    (error,) = _run(HEADER + GOOD + b"," + b"7" * 1000 + b"\n")
    assert error.raw.startswith(GOOD_TEXT)
    assert 150 <= len(error.raw) <= 200
    assert error.file == "t.csv"
    assert str(error).startswith("t.csv:2: ")


@pytest.mark.parametrize(
    ("data", "part"),
    [
        (b"", "file is empty"),
        (b"observed_at,shop_id,shop_type,x,y\n" + GOOD + b"\n", "found 'observed_at,shop_id,shop_type,x,y'"),
        (GOOD + b"\n", "expected the header 'observed_at,shop_id,shop_type,x,y,busy'"),
    ],
    ids=["empty", "missing-column", "no-header"],
)
def test_header_error(data, part):
    with pytest.raises(HeaderError, match="expected") as info:
        _run(data)
    assert part in str(info.value)


def test_text_mode_file_is_refused(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(HEADER + GOOD + b"\n")
    with path.open("r") as text_file, pytest.raises(TypeError, match="binary"):
        list(iter_rows(text_file, load_schema("drone")))


def test_validate_file_counts_and_caps_errors(tmp_path):
    path = tmp_path / "observations.csv"
    path.write_bytes(HEADER + (GOOD + b"\n") * 7 + b"bad\n" * 3)
    summary = validate_file(path, load_schema("drone"), max_errors=2)
    assert (summary.valid, summary.bad, len(summary.errors)) == (7, 3, 2)
    assert summary.bad_fraction == pytest.approx(0.3)
    assert summary.errors[0].file == str(path)
    assert summary.errors[0].line == 9
    assert summary.as_dict()["errors"][1]["line"] == 10


class _HugeLineStream:
    """A binary stream holding a header, one line of ``size`` bytes and a good line, made up as it is read."""

    def __init__(self, size: int) -> None:
        self.parts = [HEADER]
        self.left = size
        self.tail = b"\n" + GOOD + b"\n"

    def read(self, size: int = -1) -> bytes:
        if self.parts:
            return self.parts.pop()
        if self.left > 0:
            n = min(size, self.left)
            self.left -= n
            return b"7" * n
        tail, self.tail = self.tail, b""
        return tail


def test_oversized_line_is_skipped_in_bounded_memory():
    tracemalloc.start()
    try:
        items = list(iter_rows(_HugeLineStream(64 << 20), load_schema("drone"), file_name="huge.csv"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _outcome(items) == ([3], [(2, None, "line is longer than 1000000 bytes (skipped)")])
    assert peak < 16 << 20  # the line is 64 MiB


def test_blog_file_byte_for_byte():
    items = list(iter_rows(BLOG_FILE, load_schema("blog_drift")))
    valid = [i for i in items if isinstance(i, ValidRow)]
    errors = [i for i in items if isinstance(i, RowError)]
    assert len(valid) == 11_199
    assert len(errors) == 1
    assert (errors[0].line, errors[0].field) == (5601, None)
    assert "found 13" in errors[0].reason
    assert valid[0].text == "0,1,19,10,1,1,60,9,2,1,65,9,18,236"  # no BOM, no CR
    assert valid[0].key == "1" and valid[0].event_time_ms is None
    assert valid[-1].line == 11_200
