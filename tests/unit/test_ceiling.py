"""Tests for include.training.ceiling.ceilings_of_rows: one model per group of rows, split as the learner splits."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from include.demo.generate import generate_range
from include.schema import load_schema
from include.training.baseline import split_rows
from include.training.ceiling import ceilings_of_rows
from include.training.decode import decode_batch


def test_each_group_gets_its_own_model_on_the_learners_split(tmp_path):
    start = date(2026, 1, 5)
    paths = generate_range(start, start + timedelta(days=3), tmp_path, shops=20, family="type_only", noise=0.0,
                           drift_from=start + timedelta(days=2))
    lines = [line for p in paths for line in p.read_bytes().splitlines()[1:] if line]
    schema = load_schema("drone")
    decoded = decode_batch(schema, lines)
    groups = np.repeat(["a", "b"], len(lines) // 2)  # days 1-2 follow the base rule, days 3-4 the drifted one
    found = ceilings_of_rows(schema, decoded.x, decoded.y, groups, batch_messages=100, epochs=15)
    train = split_rows(len(lines), 100, 0.8)
    assert sorted(found) == ["a", "b"]
    for name in ("a", "b"):
        assert found[name]["train_rows"] == int((train & (groups == name)).sum())
        assert found[name]["heldout_rows"] == int((~train & (groups == name)).sum())
        # shop type alone decides, without noise: each group's own model learns its own rule
        assert found[name]["accuracy"] > 0.9, found
