"""One value parser (include.schema.values): ingest validation and the training decoder make one decision.

A table of tricky strings per column type pins the scalar rules and checks that the validator and the decoder
(its vectorised fast paths included) agree with them. Property tests over generated rows then prove the two
promises: (a) every row the validator accepts decodes, from the text Kafka carries, to exactly the values the
validator saw; (b) every row it refuses, the decoder refuses too, with the same reason (so the same field).

Left out of the generated text on purpose, because they are message framing, not values, and the two sides frame
differently by design (see include.training.decode): CR (ingest takes CRLF as a line end) and U+FEFF (a
byte-order mark is dropped at the start of a file by ingest, at the start of a message by the decoder).
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from include.ingest.validate import RowError, ValidRow, iter_rows
from include.schema import CsvSchema, load_schema, schema_from_dict
from include.schema.values import FieldInvalid, parser_for
from include.training.decode import decode_batch, raw_layout

DRONE = load_schema("drone")
BLOG = load_schema("blog_drift")
# Float columns, wide and negative ranges, a category that needs quoting, an empty category, and a timestamp that
# is not a feature: what the two built-in schemas do not show.
MIXED = schema_from_dict(
    {
        "id": "mixed-test",
        "header": True,
        "label": "busy",
        "time": "seen_at",
        "columns": [
            {"name": "note", "type": "category", "categories": ["plain", "two\nlines", 'say "hi"', "a,b", "crème", ""]},
            {"name": "weight", "type": "float", "min": 0, "max": 10},
            {"name": "delta", "type": "float", "min": -1000.5, "max": 1000.25},
            {"name": "big", "type": "float", "min": -1e20, "max": 1e20},
            {"name": "count", "type": "int", "min": -(10**12), "max": 10**12},
            {"name": "seen_at", "type": "timestamp", "feature": False},
            {"name": "busy", "type": "int", "min": 0, "max": 1},
        ],
    }
)
SCHEMAS = {"drone": DRONE, "blog_drift": BLOG, "mixed": MIXED}


def _settings(examples: int) -> settings:
    """Deterministic for CI: the same examples on every run, nothing remembered between runs."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _column(schema: CsvSchema, name: str):
    return schema.columns[schema.index(name)]


def _csv_line(fields) -> str:
    """One RFC 4180 record, quoting only the fields that need it (as any CSV writer would)."""
    return ",".join('"' + f.replace('"', '""') + '"' if any(c in f for c in ',"\n') else f for f in fields)


def _validate(schema: CsvSchema, lines: list[str]) -> list[ValidRow | RowError]:
    data = (schema.header_line() + "\n" if schema.header else "") + "".join(line + "\n" for line in lines)
    return list(iter_rows(io.BytesIO(data.encode("utf-8")), schema, file_name="p.csv"))


def _utc(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)


def _expected_slots(schema: CsvSchema, fields: tuple[str, ...]) -> list[float]:
    """The raw matrix row for valid fields, from the scalar rule and datetime (independent of the decoder)."""
    values = [parser_for(c)(f) for c, f in zip(schema.columns, fields)]
    out = []
    for name, kind, _ in raw_layout(schema):
        value = values[schema.index(name.rsplit(".", 1)[0] if kind in ("hour", "dow") else name)]
        out.append(_utc(value).hour if kind == "hour" else _utc(value).weekday() if kind == "dow" else value)
    return out


# --- the table: tricky strings per type -------------------------------------------------------------------------

X = _column(DRONE, "x")  # int, 0..19
WEIGHT = _column(MIXED, "weight")  # float, 0..10
DELTA = _column(MIXED, "delta")  # float, -1000.5..1000.25
COUNT = _column(MIXED, "count")  # int, -1e12..1e12
SHOP_TYPE = _column(DRONE, "shop_type")
NOTE = _column(MIXED, "note")
WHEN = _column(DRONE, "observed_at")
NOT_INT, NOT_NUMBER = "is not an integer", "is not a number"
NOT_ISO = "is not an ISO 8601 timestamp (e.g. 2026-01-05T13:00:00Z)"
NAIVE = "has no time zone; expected UTC, e.g. 2026-01-05T13:00:00Z"
NOT_UTC = "is not in UTC; expected a Z or +00:00 suffix"
T0 = 1767618000000  # 2026-01-05T13:00:00Z

# (column, text, the value, or the reason it is refused with)
TABLE = [
    (X, "7", 7), (X, "007", 7), (X, "+7", 7), (X, "-0", 0), (X, "19", 19), (X, "0", 0),
    (X, "20", "is above max 19"), (X, "-1", "is below min 0"), (X, "+-1", NOT_INT), (X, "--1", NOT_INT),
    (X, " 7", NOT_INT), (X, "7 ", NOT_INT), (X, "7.0", NOT_INT), (X, "7.", NOT_INT), (X, "7e0", NOT_INT),
    (X, "1_0", NOT_INT), (X, "٧", NOT_INT), (X, "７", NOT_INT), (X, "", NOT_INT), (X, "-", NOT_INT),
    (X, "+", NOT_INT), (X, "0x7", NOT_INT), (X, "nan", NOT_INT), (X, "7\x00", NOT_INT),
    (X, "0" * 30 + "7", "has 31 digits, out of any declared range"), (X, "0" * 29 + "7", 7),
    (COUNT, "999999999999", 999999999999), (COUNT, "-1000000000000", -(10**12)),
    (COUNT, "1000000000001", "is above max 1000000000000"), (COUNT, "123456789012345", "is above max 1000000000000"),
    (COUNT, "-000000000000000000000000000001", -1),
    (WEIGHT, "0", 0.0), (WEIGHT, "10", 10.0), (WEIGHT, "10.0", 10.0), (WEIGHT, "1e1", 10.0), (WEIGHT, ".5", 0.5),
    (WEIGHT, "5.", 5.0), (WEIGHT, "+.5", 0.5), (WEIGHT, "-0", -0.0), (WEIGHT, "0.1", 0.1), (WEIGHT, "1E-3", 0.001),
    (WEIGHT, "0000000000000000000000001.5", 1.5), (WEIGHT, "9.999999999999999999", 10.0),
    (WEIGHT, "10.000000000000001", "is above max 10"), (WEIGHT, "-0.1", "is below min 0"),
    (WEIGHT, "1e400", "is above max 10"), (WEIGHT, "1e-400", 0.0),
    (WEIGHT, "nan", NOT_NUMBER), (WEIGHT, "NaN", NOT_NUMBER), (WEIGHT, "inf", NOT_NUMBER),
    (WEIGHT, "Infinity", NOT_NUMBER), (WEIGHT, " 1", NOT_NUMBER), (WEIGHT, "1 ", NOT_NUMBER),
    (WEIGHT, "1_0", NOT_NUMBER), (WEIGHT, "٣", NOT_NUMBER), (WEIGHT, "1.٥", NOT_NUMBER), (WEIGHT, ".", NOT_NUMBER),
    (WEIGHT, "", NOT_NUMBER), (WEIGHT, "1e", NOT_NUMBER), (WEIGHT, "e1", NOT_NUMBER), (WEIGHT, "1.2.3", NOT_NUMBER),
    (WEIGHT, "0x1p3", NOT_NUMBER), (WEIGHT, "1-2", NOT_NUMBER),
    (DELTA, "-1000.5", -1000.5), (DELTA, "1000.25", 1000.25), (DELTA, "-1000.50000001", "is below min -1000.5"),
    (DELTA, "1000.26", "is above max 1000.25"), (DELTA, "-123456.789e-3", -123.456789),
    (SHOP_TYPE, "grocery", 0), (SHOP_TYPE, "florist", 4), (SHOP_TYPE, "Grocery", "is not one of grocery, pharmacy, "
     "restaurant, electronics, florist"), (SHOP_TYPE, " grocery", "is not one of grocery, pharmacy, restaurant, "
     "electronics, florist"), (SHOP_TYPE, "", "is not one of grocery, pharmacy, restaurant, electronics, florist"),
    (NOTE, "crème", 4), (NOTE, "", 5), (NOTE, "a,b", 3), (NOTE, 'say "hi"', 2), (NOTE, "two\nlines", 1),
    (NOTE, "creme", 'is not one of plain, two\nlines, say "hi", a,b, crème, '),
    (WHEN, "2026-01-05T13:00:00Z", T0), (WHEN, "2026-01-05T13:00:00+00:00", T0),
    (WHEN, "2026-01-05T13:00:00-00:00", T0), (WHEN, "2026-01-05T13:00:00.250Z", T0 + 250),
    (WHEN, "2026-01-05T13:00:00.000999Z", T0), (WHEN, "2026-01-05 13:00:00Z", T0), (WHEN, "20260105T130000Z", T0),
    (WHEN, "2026-01-05T13Z", T0), (WHEN, "2026-W02-1T13:00Z", T0), (WHEN, "0001-01-01T00:00:00Z", -62135596800000),
    (WHEN, "1969-12-31T23:59:59.999Z", -1), (WHEN, "2024-02-29T00:00:00Z", 1709164800000),
    (WHEN, "2026-01-05T13:00:00", NAIVE), (WHEN, "2026-01-05", NAIVE), (WHEN, "2026-01-05T13:00:00+01:00", NOT_UTC),
    (WHEN, "2026-01-05T13:00:00+00:00:01", NOT_UTC), (WHEN, "2026-02-29T00:00:00Z", NOT_ISO),
    (WHEN, "2026-13-05T13:00:00Z", NOT_ISO), (WHEN, "2026-01-05T24:00:00Z", NOT_ISO),
    (WHEN, "2026-01-05T23:59:60Z", NOT_ISO), (WHEN, "0000-01-05T13:00:00Z", NOT_ISO),
    (WHEN, "2026-01-05t13:00:00z", NOT_ISO), (WHEN, " 2026-01-05T13:00:00Z", NOT_ISO),
    (WHEN, "2026-01-05T13:00:00Z ", NOT_ISO), (WHEN, "２０２６-01-05T13:00:00Z", NOT_ISO), (WHEN, "yesterday", NOT_ISO),
    (WHEN, "", NOT_ISO),
]


GOOD_ROWS = {
    DRONE.id: ("2026-01-05T13:00:00Z", "1", "grocery", "3", "4", "1"),
    MIXED.id: ("plain", "1.5", "-2", "-7.25e3", "3", "2026-01-05T13:00:00Z", "0"),
}


def _schema_of(column) -> CsvSchema:
    return next(s for s in SCHEMAS.values() if column in s.columns)


def _row_with(schema: CsvSchema, column, text: str) -> str:
    """A valid row of ``schema`` with ``text`` in ``column``, as a CSV line."""
    fields = list(GOOD_ROWS[schema.id])
    fields[schema.columns.index(column)] = text
    return _csv_line(fields)


def _decoded_as_validated(schema: CsvSchema, items: list[ValidRow | RowError], lines: list[str]) -> None:
    """Decode what each line becomes in Kafka (a valid row's text; a refused line as it was) in one mini-batch,
    and check the decoder made the validator's decision: the same values, or the same reason."""
    messages = [(i.text if isinstance(i, ValidRow) else line).encode("utf-8") for i, line in zip(items, lines)]
    decoded = decode_batch(schema, messages)
    valid = [k for k, i in enumerate(items) if isinstance(i, ValidRow)]
    assert decoded.errors == [(k, i.reason) for k, i in enumerate(items) if isinstance(i, RowError)]
    assert decoded.good.tolist() == valid
    if valid:
        fields = [items[k].fields for k in valid]
        expected = np.array([_expected_slots(schema, f) for f in fields], dtype=np.float32)
        np.testing.assert_array_equal(decoded.x, expected)
        assert decoded.x.tobytes() == expected.tobytes()  # bit for bit: the sign of a zero too
        label = [parser_for(schema.columns[schema.label_index])(f[schema.label_index]) for f in fields]
        np.testing.assert_array_equal(decoded.y, np.array(label, dtype=np.float32))
    for k in valid:
        if schema.time is not None:
            assert items[k].event_time_ms == parser_for(_column(schema, schema.time))(items[k].fields[schema.time_index])


@pytest.mark.parametrize(("column", "text", "outcome"), TABLE, ids=[f"{c.name}={t!r}" for c, t, _ in TABLE])
def test_tricky_strings(column, text, outcome):
    """The scalar rule gives the value or the reason; the validator and the decoder decide the same."""
    parse = parser_for(column)
    if isinstance(outcome, str):
        with pytest.raises(FieldInvalid) as info:
            parse(text)
        assert str(info.value) == outcome
    else:
        value = parse(text)
        assert value == outcome and type(value) is type(outcome)
        assert np.copysign(1.0, value) == np.copysign(1.0, outcome)  # the sign of a zero too
    schema = _schema_of(column)
    good = _row_with(schema, column, GOOD_ROWS[schema.id][schema.columns.index(column)])
    # Among valid rows, so that the fast paths see the field in a mini-batch, as in training.
    lines = [good, _row_with(schema, column, text), good]
    items = _validate(schema, lines)
    assert [type(i) for i in items] == [ValidRow, RowError if isinstance(outcome, str) else ValidRow, ValidRow]
    if isinstance(outcome, str):
        assert items[1].field == column.name
        assert items[1].reason == f"field {column.name!r} = {text[:40]!r} {outcome}"
    _decoded_as_validated(schema, items, lines)


# --- generated rows ---------------------------------------------------------------------------------------------

# Any text but framing (see the module docstring); commas, quotes and newlines are in: lines are written as RFC 4180.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\ufeff"), max_size=12)
DIGITS = st.text("0123456789", max_size=20)
SIGN = st.sampled_from(["", "", "-", "+", "--", "+-", " "])
OTHER_DIGITS = [str.maketrans("0123456789", "".join(chr(base + d) for d in range(10)))
                for base in (0x660, 0xFF10, 0x966)]  # Arabic-Indic, fullwidth, Devanagari
NUMBER_WORDS = ["nan", "NaN", "-nan", "inf", "+inf", "-Infinity", "0x10", "0b1", "1_000", "1e", "e1", ".", "-.",
                "+.", "1.2.3", "1e+", "1e-3.5", "0o7", "١٢", "²", "1,5", "", " ", "\t1", "1\n"]


def _around(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """The text, sometimes with spaces, a tab or a dot stuck to it."""
    stuck = st.sampled_from(["", "", "", " ", "\t", ".", "0", "_0", "e0", "E+1", ".0", ".5"])
    return st.tuples(SIGN, text, stuck).map("".join)


def _ints(column) -> st.SearchStrategy[str]:
    lo, hi = int(column.min), int(column.max)
    number = st.one_of(st.integers(lo, hi), st.integers(lo - 3, hi + 3), st.integers(-(10**40), 10**40))
    return st.one_of(
        number.map(str),
        _around(number.map(abs).map(str)),
        _around(DIGITS),
        st.tuples(st.integers(0, 32), number.map(abs)).map(lambda p: "0" * p[0] + str(p[1])),  # leading zeros
        number.map(lambda n: f"{n:_}"),  # underscores
        st.tuples(number.map(str), st.sampled_from(OTHER_DIGITS)).map(lambda p: p[0].translate(p[1])),
        st.sampled_from(NUMBER_WORDS),
    )


def _floats(column) -> st.SearchStrategy[str]:
    lo, hi = column.min, column.max
    value = st.one_of(st.floats(lo, hi), st.floats(lo - 1, hi + 1), st.floats())  # st.floats() has nan and inf
    decimal = st.tuples(SIGN, DIGITS, st.sampled_from(["", ".", "."]), DIGITS,
                        st.sampled_from(["", "", "e", "E", "e+", "e-", "E-"]), st.text("0123456789", max_size=4))
    return st.one_of(
        value.map(repr),
        value.map(str),
        st.tuples(value, st.integers(0, 20)).map(lambda p: f"{p[0]:.{p[1]}f}"),
        decimal.map("".join),
        _around(DIGITS),
        st.tuples(value.map(repr), st.sampled_from(OTHER_DIGITS)).map(lambda p: p[0].translate(p[1])),
        st.sampled_from(NUMBER_WORDS),
    )


MOMENTS = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999))
ZONES = ["Z", "Z", "Z", "+00:00", "-00:00", "+0000", "+00", "+01:00", "-05:30", "+00:00:01", "", "z", " Z", "UTC"]
BAD_DATES = ["2026-02-29", "2024-02-30", "2026-13-01", "2026-00-10", "2026-04-31", "0000-01-01", "2026-1-5",
             "26-01-05", "2026/01/05"]
BAD_TIMES = ["24:00:00", "23:60:00", "23:59:60", "7:00:00", "12:00:00.", "12:00:00.1234567", "12:00:0"]


def _iso(moment: datetime, spec: str, sep: str, basic: bool) -> str:
    text = moment.isoformat(sep=sep, timespec=spec)
    if basic:  # 20260105T130000: ISO 8601's basic format
        day, _, time = text.partition(sep)
        text = day.replace("-", "") + sep + time.replace(":", "")
    return text


# The canonical form (what the vectorised path reads) with one part bent to an edge value, valid or not.
EDGES = [(0, v) for v in (0, 1, 1970, 2000, 2100, 9999)] + [(1, v) for v in (0, 1, 2, 12, 13, 99)] + \
    [(2, v) for v in (0, 1, 28, 29, 30, 31, 32, 99)] + [(3, v) for v in (0, 23, 24, 25, 99)] + \
    [(4, v) for v in (0, 59, 60, 99)] + [(5, v) for v in (0, 59, 60, 61, 99)]


def _bent(moment: datetime, edge: tuple[int, int]) -> str:
    parts = [moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second]
    parts[edge[0]] = edge[1]
    return "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z".format(*parts)


CANONICAL_SHAPED = st.builds(_bent, MOMENTS, st.sampled_from(EDGES))


def _timestamps(column) -> st.SearchStrategy[str]:
    spec = st.sampled_from(["seconds", "seconds", "seconds", "milliseconds", "microseconds", "minutes", "hours"])
    sep = st.sampled_from(["T", "T", "T", " ", "t", "_"])
    iso = st.builds(_iso, MOMENTS, spec, sep, st.booleans())
    return st.one_of(
        st.tuples(iso, st.sampled_from(ZONES)).map("".join),
        st.tuples(MOMENTS.map(lambda m: m.strftime("%Y-%m-%dT%H:%M:%SZ")), st.sampled_from(["", " ", "\t"]))
        .map(lambda p: p[1] + p[0] if len(p[1]) % 2 else p[0] + p[1]),
        st.tuples(st.sampled_from(BAD_DATES), st.sampled_from(["T12:00:00", "T" + BAD_TIMES[0]]), st.sampled_from(ZONES))
        .map("".join),
        st.tuples(MOMENTS.map(lambda m: m.date().isoformat()), st.sampled_from(BAD_TIMES), st.sampled_from(ZONES))
        .map(lambda p: f"{p[0]}T{p[1]}{p[2]}"),
        MOMENTS.map(lambda m: m.date().isoformat()),
        st.tuples(MOMENTS.map(lambda m: m.isoformat() + "Z"), st.sampled_from(OTHER_DIGITS))
        .map(lambda p: p[0].translate(p[1])),
    )


def _categories(column) -> st.SearchStrategy[str]:
    declared = st.sampled_from(column.categories)
    variants = [str.upper, str.title, str.strip, lambda c: " " + c, lambda c: c + " ", lambda c: c[:-1],
                lambda c: c + c, lambda c: c + "\x00", lambda c: '"' + c + '"']
    return st.one_of(declared, st.tuples(declared, st.sampled_from(variants)).map(lambda p: p[1](p[0])))


TRICKY = {"int": _ints, "float": _floats, "timestamp": _timestamps, "category": _categories}


def _valid(column) -> st.SearchStrategy[str]:
    """Strings the rule accepts, in the forms files really hold (and the fast paths are for)."""
    if column.type == "int":
        return st.integers(int(column.min), int(column.max)).map(str)
    if column.type == "float":
        return st.one_of(st.floats(column.min, column.max).map(repr),
                         st.tuples(st.floats(column.min, column.max), st.integers(0, 6)).map(lambda p: f"{p[0]:.{p[1]}f}"))
    if column.type == "category":
        return st.sampled_from(column.categories)
    return MOMENTS.map(lambda m: m.replace(microsecond=0).isoformat() + "Z")


def _rows(schema: CsvSchema) -> st.SearchStrategy[list[str]]:
    """A valid row with up to three fields replaced by tricky strings of their type or by any text."""
    n = len(schema.columns)
    edit = st.integers(0, n - 1).flatmap(
        lambda i: st.tuples(st.just(i), st.one_of(TRICKY[schema.columns[i].type](schema.columns[i]), TEXT)))

    def apply(row_and_edits):
        row, edits = row_and_edits
        row = list(row)
        for i, text in edits:
            row[i] = text
        return row

    return st.tuples(st.tuples(*(_valid(c) for c in schema.columns)), st.lists(edit, max_size=3)).map(apply)


def _accepts(column, text: str) -> bool:
    try:
        parser_for(column)(text)
    except FieldInvalid:
        return False
    return True


@pytest.mark.parametrize("name", list(SCHEMAS))
@_settings(60)
@given(data=st.data())
def test_the_decoder_decides_as_the_validator(name, data):
    """(a) A row the validator accepts decodes to exactly its values; (b) a row it refuses, the decoder refuses
    with the same reason. The rows of one example go through both as one file and one mini-batch."""
    schema = SCHEMAS[name]
    rows = data.draw(st.lists(_rows(schema), min_size=1, max_size=16), label="rows")
    lines = [_csv_line(row) for row in rows]
    items = _validate(schema, lines)
    assert len(items) == len(lines)
    for item, row in zip(items, rows):
        if isinstance(item, ValidRow):
            assert item.fields == tuple(row)
        else:  # the reason is the scalar rule's for the first bad field
            assert item.field is not None, item
            first = next(k for k, (c, f) in enumerate(zip(schema.columns, row)) if not _accepts(c, f))
            assert item.field == schema.columns[first].name
    _decoded_as_validated(schema, items, lines)


# Strings of the shapes the fast paths read, at their edges (and just past them).
FAST_SHAPED = {
    "int": lambda column: st.tuples(st.sampled_from(["", "", "-", "+"]), DIGITS).map("".join),
    "float": lambda column: st.tuples(st.sampled_from(["", "-", "+"]), DIGITS, st.sampled_from(["", ".", "."]),
                                      DIGITS).map("".join),
    "category": lambda column: st.sampled_from(column.categories),
    "timestamp": lambda column: CANONICAL_SHAPED,
}


@pytest.mark.parametrize("kind", ["int", "float", "category", "timestamp"])
@_settings(80)
@given(data=st.data())
def test_tricky_fields_of_one_type(kind, data):
    """Many strings of one column type (or any text) in one mini-batch of otherwise valid rows: the fast paths
    see dense edge cases side by side, and accept only what the validator accepts, with its value."""
    columns = [(name, c) for name, schema in SCHEMAS.items() for c in schema.columns if c.type == kind]
    name, column = data.draw(st.sampled_from(columns), label="column")
    schema = SCHEMAS[name]
    strings = st.one_of(TRICKY[kind](column), FAST_SHAPED[kind](column), _valid(column), TEXT)
    texts = data.draw(st.lists(strings, min_size=4, max_size=48), label="texts")
    good = list(data.draw(st.tuples(*(_valid(c) for c in schema.columns)), label="row"))
    at = schema.columns.index(column)
    lines = [_csv_line(good[:at] + [text] + good[at + 1:]) for text in texts]
    _decoded_as_validated(schema, _validate(schema, lines), lines)


@pytest.mark.parametrize("name", list(SCHEMAS))
@_settings(25)
@given(data=st.data())
def test_field_counts_are_refused_alike(name, data):
    schema = SCHEMAS[name]
    n = len(schema.columns)
    # Blank fields left out: a blank record is ingest's "empty line" and the decoder's "empty message" (framing).
    rows = data.draw(st.lists(st.lists(TEXT.filter(lambda t: t.strip()), min_size=1, max_size=n + 3)
                              .filter(lambda r: len(r) != n), min_size=1, max_size=5), label="rows")
    lines = [_csv_line(row) for row in rows]
    items = _validate(schema, lines)
    assert [i.reason for i in items] == [f"expected {n} fields, found {len(row)}" for row in rows]
    _decoded_as_validated(schema, items, lines)


@_settings(300)
@given(value=st.one_of(TEXT, st.sampled_from(NUMBER_WORDS)), column=st.sampled_from(
    [c for s in SCHEMAS.values() for c in s.columns]))
def test_any_text_is_a_value_or_a_reason(value, column):
    """The scalar rule never fails otherwise: every string is a value of the column or a FieldInvalid."""
    try:
        parsed = parser_for(column)(value)
    except FieldInvalid as exc:
        assert str(exc)
    else:
        assert isinstance(parsed, (int, float))


# --- the fast paths' edges, swept --------------------------------------------------------------------------------

MOMENTS_AT_EDGES = [datetime(2026, 1, 5, 13), datetime(2024, 2, 29, 23, 59, 59), datetime(2100, 2, 28, 12, 30, 30),
                    datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59), datetime(1970, 1, 1),
                    datetime(1969, 12, 31, 23, 59, 59)]


def _number_sweep() -> list[str]:
    """Digit strings of 0 to 20 digits with every sign and a point at every place: around 8 digits (the
    8-byte read) and 15 (the exact mantissa), where the fast paths stop and the scalar parser takes over."""
    out = []
    for n in range(21):
        for digits in ("9" * n, "1" + "0" * (n - 1) if n else "", "0" * n, "1234567890123456789012"[:n]):
            for sign in ("", "-", "+"):
                out.append(sign + digits)
                out += [sign + digits[:p] + "." + digits[p:] for p in range(n + 1)]
    return sorted(set(out))


SWEEPS = {
    "int": (_number_sweep(), ["x", "shop_id", "count", "busy"]),
    "float": (_number_sweep(), ["weight", "delta", "big"]),
    "timestamp": ([_bent(m, edge) for m in MOMENTS_AT_EDGES for edge in EDGES]
                  + [m.isoformat() + z for m in MOMENTS_AT_EDGES for z in ("Z", "+00:00", ".5Z", "")],
                  ["observed_at", "seen_at"]),
}


@pytest.mark.parametrize("kind", list(SWEEPS))
def test_fast_path_edges_are_decided_by_the_rule(kind):
    texts, names = SWEEPS[kind]
    for schema in (DRONE, MIXED):
        for name in set(names) & set(schema.names):
            column = _column(schema, name)
            lines = [_row_with(schema, column, text) for text in texts]
            _decoded_as_validated(schema, _validate(schema, lines), lines)
