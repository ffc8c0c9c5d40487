"""Decoding message values into the raw feature matrix (include.training.decode)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from include.demo.reference import BLOG_FILE
from include.training.decode import decode_batch, raw_layout, raw_width
from include.schema import load_schema, schema_from_dict

GOOD_BLOG = b"1,19,10,1,1,1,60,9,2,1,65,9,18,236"  # the file's first row, BOM removed


@pytest.fixture(scope="module")
def blog():
    return load_schema("blog_drift")


@pytest.fixture(scope="module")
def drone():
    return load_schema("drone")


def slot(schema, name: str) -> int:
    """Position of the raw slot ``name`` in the schema's raw matrix."""
    return [n for n, _, _ in raw_layout(schema)].index(name)


def feature_csv_columns(schema) -> list[int]:
    """CSV column of each raw slot, in slot order (only for schemas whose slots are all numeric, like the blog's)."""
    layout = raw_layout(schema)
    assert all(kind == "numeric" for _, kind, _ in layout)
    return [schema.index(name) for name, _, _ in layout]


def blog_row(**changes: str) -> bytes:
    fields = GOOD_BLOG.decode().split(",")
    names = [c.name for c in load_schema("blog_drift").columns]
    for name, value in changes.items():
        fields[names.index(name)] = value
    return ",".join(fields).encode()


def test_layout_blog(blog):
    layout = raw_layout(blog)
    # 14 CSV columns less the label (c0_busy) and the identifier (c1_shop_id, feature: false).
    assert raw_width(blog) == 12 == len(layout) == len(blog.columns) - 2
    assert [name for name, _, _ in layout] == [c.name for c in blog.columns if c.feature and c.name != blog.label]
    assert "c1_shop_id" not in [name for name, _, _ in layout] and blog.key == "c1_shop_id"
    assert layout[0] == ("c2_x", "numeric", {"min": 1.0, "max": 20.0})
    assert layout[-1] == ("c13", "numeric", {"min": 1.0, "max": 1000.0})
    assert all(kind == "numeric" for _, kind, _ in layout)


def test_layout_drone(drone):
    assert raw_layout(drone) == [
        ("observed_at.hour", "hour", {}),
        ("observed_at.dow", "dow", {}),
        ("shop_type", "category", {"categories": ["grocery", "pharmacy", "restaurant", "electronics", "florist"]}),
        ("x", "numeric", {"min": 0.0, "max": 19.0}),
        ("y", "numeric", {"min": 0.0, "max": 19.0}),
    ]
    assert raw_width(drone) == 5


def test_blog_row_values(blog):
    second = b"0,2,7,8,1,1,38,11,1,2,40,6,11,24"
    d = decode_batch(blog, [GOOD_BLOG, second])
    assert d.errors == []
    assert d.good.tolist() == [0, 1]
    assert d.x.dtype == np.float32 and d.y.dtype == np.float32
    assert d.x.shape == (2, raw_width(blog))
    cols = feature_csv_columns(blog)
    for row, value in zip(d.x, [GOOD_BLOG, second]):
        fields = [float(f) for f in value.split(b",")]
        np.testing.assert_array_equal(row, [fields[c] for c in cols])
    # The same, spelt out: the first row without the label (1) and the shop id (19).
    np.testing.assert_array_equal(d.x[0], [10, 1, 1, 1, 60, 9, 2, 1, 65, 9, 18, 236])
    np.testing.assert_array_equal(d.y, [1, 0])


def test_drone_row_values(drone):
    d = decode_batch(drone, [
        b"2026-01-05T13:00:00Z,17,pharmacy,3,19,1",  # a Monday
        b"2026-01-11T23:59:59Z,18,florist,0,0,0",  # a Sunday
    ])
    assert d.errors == []
    np.testing.assert_array_equal(d.x, [[13, 0, 1, 3, 19], [23, 6, 4, 0, 0]])
    np.testing.assert_array_equal(d.y, [1, 0])


# The reasons are ingest's (include.schema.values): a message is refused exactly as its row would be quarantined.
@pytest.mark.parametrize(
    "value, reason",
    [
        (b"1,2,3", "expected 14 fields, found 3"),
        (b"", "empty message"),
        (b"  ", "empty message"),
        (None, "empty message"),
        (b"\xff\xfe,1", "not valid UTF-8"),
        (blog_row(c6="2a"), "field 'c6' = '2a' is not an integer"),
        (blog_row(c6=""), "field 'c6' = '' is not an integer"),
        (blog_row(c6="1_0"), "field 'c6' = '1_0' is not an integer"),
        (blog_row(c6="20.5"), "field 'c6' = '20.5' is not an integer"),
        (blog_row(c6="nan"), "field 'c6' = 'nan' is not an integer"),
        (blog_row(c13="1001"), "field 'c13' = '1001' is above max 1000"),
        (blog_row(c2_x="-1"), "field 'c2_x' = '-1' is below min 1"),
        (blog_row(c0_busy="2"), "field 'c0_busy' = '2' is above max 1"),
        (b"1,2,3\n4,5,6", "more than one line"),
        (b'1,"2,3', "bad CSV quoting"),
    ],
)
def test_bad_blog_rows_are_reported(blog, value, reason):
    d = decode_batch(blog, [GOOD_BLOG, value, GOOD_BLOG])
    assert d.good.tolist() == [0, 2]
    assert len(d.errors) == 1
    index, why = d.errors[0]
    assert index == 1
    assert why.startswith(reason)
    assert d.x.shape == (2, raw_width(blog))


def test_non_feature_columns_are_checked_like_the_others(blog):
    """c1_shop_id is not a feature: it is not decoded, but it is checked with the same rule as ingest checks it."""
    d = decode_batch(blog, [GOOD_BLOG, blog_row(c1_shop_id="-1"), blog_row(c1_shop_id="not a number"),
                            blog_row(c1_shop_id="100"), b"1,10,1,1,1,60,9,2,1,65,9,18,236"])
    assert d.good.tolist() == [0, 3]
    assert d.errors == [
        (1, "field 'c1_shop_id' = '-1' is below min 1"),
        (2, "field 'c1_shop_id' = 'not a number' is not an integer"),
        (4, "expected 14 fields, found 13"),
    ]
    np.testing.assert_array_equal(d.x, np.repeat(d.x[:1], 2, axis=0))
    np.testing.assert_array_equal(d.y, [1, 1])


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"2026-02-30T13:00:00Z,1,grocery,1,1,1", "'2026-02-30T13:00:00Z' is not an ISO 8601 timestamp"),
        (b"2026-01-05T24:00:00Z,1,grocery,1,1,1", "is not an ISO 8601 timestamp"),
        (b"yesterday,1,grocery,1,1,1", "'yesterday' is not an ISO 8601 timestamp"),
        (b"2026-01-05T13:00:00Z,1,bakery,1,1,1", "field 'shop_type' = 'bakery' is not one of grocery, pharmacy"),
        (b"2026-01-05T13:00:00Z,1, grocery,1,1,1", "field 'shop_type' = ' grocery' is not one of"),
        (b"2026-01-05T13:00:00Z,1,Grocery,1,1,1", "field 'shop_type' = 'Grocery' is not one of"),
        (b"2026-01-05T13:00:00Z,1,grocery,20,1,1", "field 'x' = '20' is above max 19"),
        (b"2026-01-05T13:00:00Z,0,grocery,1,1,1", "field 'shop_id' = '0' is below min 1"),  # not a feature
        (b"2026-01-05T13:00:00+02:00,1,grocery,1,1,1", "is not in UTC; expected a Z or +00:00 suffix"),
        (b"2026-01-05T13:00:00,1,grocery,1,1,1", "has no time zone"),
        (b" 2026-01-05T13:00:00Z,1,grocery,1,1,1", "is not an ISO 8601 timestamp"),
    ],
)
def test_bad_drone_rows_are_reported(drone, value, reason):
    d = decode_batch(drone, [value])
    assert d.x.shape == (0, 5)
    assert d.good.tolist() == []
    assert [i for i, _ in d.errors] == [0]
    assert reason in d.errors[0][1]


def test_first_bad_column_is_reported(blog):
    d = decode_batch(blog, [blog_row(c2_x="99", c6="x"), blog_row(c1_shop_id="0", c0_busy="x")])
    assert d.errors == [(0, "field 'c2_x' = '99' is above max 20"), (1, "field 'c0_busy' = 'x' is not an integer")]


@pytest.mark.parametrize(
    "value, expected",
    [
        # Message framing, not values: ingest never sends these but quoting, and a producer that does is understood.
        (b"\xef\xbb\xbf" + GOOD_BLOG, 10.0),  # byte-order mark
        (GOOD_BLOG + b"\r\n", 10.0),  # line ending kept by a producer
        (GOOD_BLOG.decode(), 10.0),  # str
        (bytearray(GOOD_BLOG), 10.0),
        (blog_row(c2_x='"7"'), 7.0),  # CSV quoting
        # Values the one rule accepts.
        (blog_row(c2_x="007"), 7.0),  # leading zeros
        (blog_row(c2_x="+7"), 7.0),  # a plus sign
    ],
)
def test_tolerated_forms(blog, value, expected):
    d = decode_batch(blog, [value])
    assert d.errors == []
    assert slot(blog, "c2_x") == 0  # the first raw slot, as the id column used to be
    assert d.x[0, slot(blog, "c2_x")] == expected


# The old decoder read these through float(); ingest refuses them, so the decoder does too.
@pytest.mark.parametrize("token", ["7.0", "7e0", " 7 ", "7 ", "1_0", "٧", "0x7", "7.", "--7"])
def test_integers_are_plain_digits(blog, token):
    d = decode_batch(blog, [blog_row(c2_x=token)])
    assert d.errors == [(0, f"field 'c2_x' = {token!r} is not an integer")]


def test_non_ascii_category_and_quoted_comma():
    schema = schema_from_dict({
        "id": "t", "label": "y",
        "columns": [
            {"name": "kind", "type": "category", "categories": ["café", "a,b", "plain"]},
            {"name": "v", "type": "float", "min": -10, "max": 10},
            {"name": "y", "type": "int", "min": 0, "max": 1},
        ],
    })
    d = decode_batch(schema, ["café,-1.25,1".encode(), b'"a,b",.5,0', b"plain,-0.0,1", b"a,b,1,1"])
    np.testing.assert_array_equal(d.x, [[0, -1.25], [1, 0.5], [2, 0.0]])
    assert d.good.tolist() == [0, 1, 2]
    assert d.errors == [(3, "expected 3 fields, found 4")]


def test_quoted_fields_as_ingest_writes_them():
    """Ingest re-quotes a field holding a comma, quote or newline; the decoder reads that text back."""
    schema = schema_from_dict({
        "id": "t", "label": "y",
        "columns": [
            {"name": "note", "type": "category", "categories": ["plain", "two\nlines", 'say "hi"', "a,b"]},
            {"name": "y", "type": "int", "min": 0, "max": 1},
        ],
    })
    d = decode_batch(schema, [b'"two\nlines",1', b'"say ""hi""",0', b'"a,b",1', b"plain,0", b'"two\nlines",2'])
    assert d.good.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(d.x[:, 0], [1, 2, 3, 0])
    np.testing.assert_array_equal(d.y, [1, 0, 1, 0])
    assert d.errors == [(4, "field 'y' = '2' is above max 1")]


def test_decimals_and_signs():
    schema = schema_from_dict({
        "id": "t", "label": "y",
        "columns": [{"name": "v", "type": "float", "min": -1e9, "max": 1e9}, {"name": "y", "type": "int", "min": 0, "max": 1}],
    })
    tokens = ["0", "-0", "+0", "12.5", "-12.5", "0.001", "-.5", "5.", "123456.789", "99999999", "-0.000001", "1e3",
              "+1.5E-2", "0000000000000000001.25", "123456789.123456789"]
    d = decode_batch(schema, [f"{t},0".encode() for t in tokens])
    assert d.errors == []
    np.testing.assert_array_equal(d.x[:, 0], np.array([float(t) for t in tokens], dtype=np.float32))
    bad = ["1-2", "1..2", "--1", "-", ".", "1.2.3", " 7 ", "nan", "inf", "1_0", "٣", "1e", "e3", "0x10", ""]
    d = decode_batch(schema, [f"{t},0".encode() for t in bad])
    assert d.errors == [(i, f"field 'v' = {t!r} is not a number") for i, t in enumerate(bad)]
    d = decode_batch(schema, [b"1e10,0", b"-1000000000.5,0"])
    assert d.errors == [(0, "field 'v' = '1e10' is above max 1000000000"),
                        (1, "field 'v' = '-1000000000.5' is below min -1000000000")]


def test_timestamps_match_datetime(drone):
    rng = random.Random(7)
    base = datetime(1999, 12, 25, tzinfo=timezone.utc)
    times = [base + timedelta(seconds=rng.randrange(0, 40 * 365 * 86400)) for _ in range(2000)]
    values = [f"{t:%Y-%m-%dT%H:%M:%SZ},1,grocery,0,0,1".encode() for t in times]
    d = decode_batch(drone, values)
    assert d.errors == []
    np.testing.assert_array_equal(d.x[:, 0], [t.hour for t in times])
    np.testing.assert_array_equal(d.x[:, 1], [t.weekday() for t in times])


@pytest.mark.parametrize(
    "stamp, hour, dow",
    [
        # Every form datetime.fromisoformat reads with a zero UTC offset; the fast path takes only the first.
        ("2026-01-05T13:00:00Z", 13, 0),
        ("2026-01-05T13:00:00+00:00", 13, 0),
        ("2026-01-05T13:00:00-00:00", 13, 0),
        ("2026-01-05T13:00:00.250Z", 13, 0),
        ("2026-01-05T23:59:59.999999Z", 23, 0),
        ("2026-01-05 13:00:00Z", 13, 0),
        ("20260105T130000Z", 13, 0),
        ("2026-01-05T13:00Z", 13, 0),
        ("1969-12-31T23:00:00Z", 23, 2),  # before the epoch: negative milliseconds
    ],
)
def test_other_timestamp_forms(drone, stamp, hour, dow):
    d = decode_batch(drone, [f"{stamp},1,grocery,0,0,1".encode()])
    assert d.errors == []
    assert d.x[0, :2].tolist() == [hour, dow]


def test_empty_input(blog):
    d = decode_batch(blog, [])
    assert d.x.shape == (0, raw_width(blog)) and d.y.shape == (0,) and d.good.shape == (0,) and d.errors == []


def test_all_bad(blog):
    d = decode_batch(blog, [b"x", None])
    assert d.x.shape == (0, raw_width(blog))
    assert [i for i, _ in d.errors] == [0, 1]


def test_mixed_batch_keeps_order(blog):
    rng = np.random.default_rng(3)
    values, expected, good = [], [], []
    for i in range(500):
        row = [int(rng.integers(0, 2))] + [int(rng.integers(c.min, c.max + 1)) for c in blog.columns[1:]]
        if i % 7 == 3:
            values.append(b"broken")
            continue
        values.append(",".join(map(str, row)).encode())
        expected.append(row)
        good.append(i)
    d = decode_batch(blog, values)
    assert d.good.tolist() == good
    assert [i for i, _ in d.errors] == [i for i in range(500) if i % 7 == 3]
    np.testing.assert_array_equal(d.x, np.array(expected, dtype=np.float32)[:, feature_csv_columns(blog)])
    np.testing.assert_array_equal(d.y, np.array(expected, dtype=np.float32)[:, blog.label_index])


def test_blog_file_matches_plain_parsing(blog):
    lines = [line for line in BLOG_FILE.read_bytes().split(b"\r\n") if line]
    d = decode_batch(blog, lines)
    assert d.errors == [(5600, "expected 14 fields, found 13")]  # line 5,601 is malformed
    text = BLOG_FILE.read_text(encoding="utf-8-sig").splitlines()
    ref = np.array([[float(f) for f in line.split(",")] for i, line in enumerate(text) if i != 5600])
    assert ref.shape[1] == len(blog.columns)
    np.testing.assert_array_equal(d.x, ref[:, feature_csv_columns(blog)].astype(np.float32))
    np.testing.assert_array_equal(d.y, ref[:, blog.label_index].astype(np.float32))
