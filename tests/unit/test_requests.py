"""Requests (CSV rows in the schema's order, the label optional) decode as the one value parser reads them."""

from __future__ import annotations

import math

import numpy as np

from include.schema import load_schema
from include.serving.requests import decode_requests

ROW = "2026-01-05T13:00:00Z,7,pharmacy,3,11"


def test_a_row_without_its_label_reads_like_the_same_row_with_it_in_every_form():
    schema = load_schema("drone")
    quoted = ROW.replace("pharmacy", '"pharmacy"')
    values = [f"{ROW},1".encode(), ROW.encode(), ROW, f"\ufeff{ROW}\r\n".encode(), quoted.encode(), f"{ROW},0"]
    decoded = decode_requests(schema, values)
    assert decoded.errors == [] and decoded.good.tolist() == [0, 1, 2, 3, 4, 5]
    assert all(np.array_equal(decoded.x[0], row) for row in decoded.x)
    labels = decoded.labels.tolist()
    assert labels[0] == 1 and labels[5] == 0 and all(math.isnan(v) for v in labels[1:5])


def test_refused_requests_say_why_and_the_rest_are_scored_in_order():
    schema = load_schema("drone")
    values = [b"not,a,row", ROW.replace("pharmacy", "bakery").encode(), b"\xff\xfe," * 4, None, ROW.encode(),
              f"{ROW},1,extra".encode(), b""]
    decoded = decode_requests(schema, values)
    refused = dict(decoded.errors)
    assert decoded.good.tolist() == [4] and sorted(refused) == [0, 1, 2, 3, 5, 6]
    assert "bakery" in refused[1] and all(reason for reason in refused.values())
