"""Answers are valid JSON for any topic or model name, one per request, refused ones with their reason."""

from __future__ import annotations

import json

import numpy as np

from include.schema import load_schema
from include.serving.answers import encode_answers, predictions_topic
from include.serving.requests import decode_requests


def test_each_request_gets_one_json_answer_whatever_the_names():
    requests = decode_requests(load_schema("drone"), [b"2026-01-05T13:00:00Z,7,pharmacy,3,11,1", b"bad",
                                                      b"2026-01-05T13:00:00Z,7,florist,3,11"])
    answers = encode_answers('odd"topic%s', 'model "%d" \\ name', 4, [0, 1, 2], [10, 11, 12], requests,
                             np.array([0.25, 0.75]))
    decoded = [json.loads(a) for a in answers]
    assert [(a["topic"], a["model"], a["version"], a["partition"], a["offset"]) for a in decoded] == [
        ('odd"topic%s', 'model "%d" \\ name', 4, p, o) for p, o in ((0, 10), (1, 11), (2, 12))]
    assert (decoded[0]["probability"], decoded[0]["label"], decoded[0]["observed_label"]) == (0.25, 0, 1)
    assert (decoded[2]["probability"], decoded[2]["label"], decoded[2]["observed_label"]) == (0.75, 1, None)
    assert decoded[1]["error"] == requests.errors[0][1] and "probability" not in decoded[1]
    assert predictions_topic("x.requests") == "x.requests.predictions"
