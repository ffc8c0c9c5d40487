"""Tests for include.demo.generate: determinism, layout on disk, validity, drift, Bayes accuracy, atomic writes."""

from __future__ import annotations

import csv
import json
import os
import stat
from datetime import date, timedelta

import numpy as np
import pytest

from include.demo import generate
from include.demo.generate import bayes_accuracy, busy_probability, generate_range, meta_path, noisy_probability
from include.schema import load_schema
from include.ingest.validate import validate_file

START = date(2026, 1, 5)
DAY = timedelta(days=1)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_one_file_and_sidecar_per_day(tmp_path):
    paths = generate_range(START, START + 2 * DAY, tmp_path)
    names = [f"observations_2026-01-0{d}" for d in (5, 6, 7)]
    assert [p.name for p in paths] == [f"{n}.csv" for n in names]
    assert _files(tmp_path) == sorted([f"{n}.csv" for n in names] + [f"{n}.meta.json" for n in names])
    assert stat.S_IMODE(paths[0].stat().st_mode) == 0o644  # readable by an ingest running as another user
    meta = json.loads(meta_path(paths[0]).read_text())
    assert meta["rows"] == 2400
    assert meta["schema"] == load_schema("drone").id
    assert (meta["seed"], meta["drift"], meta["date"]) == (7, False, "2026-01-05")


def test_same_arguments_give_identical_bytes_and_sub_ranges_agree(tmp_path):
    full = generate_range(START, START + 3 * DAY, tmp_path / "a", seed=11, drift_from=START + 2 * DAY)
    part = generate_range(START + 2 * DAY, START + 2 * DAY, tmp_path / "b", seed=11,
                          drift_from=START + 2 * DAY)
    again = generate_range(START, START + 3 * DAY, tmp_path / "c", seed=11, drift_from=START + 2 * DAY)
    for first, second in zip(full, again):
        assert first.read_bytes() == second.read_bytes()
        assert meta_path(first).read_bytes() == meta_path(second).read_bytes()
    assert part[0].read_bytes() == full[2].read_bytes()


def test_other_seed_gives_other_data(tmp_path):
    (a,) = generate_range(START, START, tmp_path / "a", seed=1)
    (b,) = generate_range(START, START, tmp_path / "b", seed=2)
    assert a.read_bytes() != b.read_bytes()


def test_header_and_timestamps_follow_the_schema(tmp_path):
    (path,) = generate_range(START, START, tmp_path, shops=10)
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert ",".join(rows[0]) == load_schema("drone").header_line()
    assert len(rows) == 1 + 24 * 10
    assert rows[1][0] == "2026-01-05T00:00:00Z"
    assert rows[-1][0] == "2026-01-05T23:00:00Z"
    assert {r[1] for r in rows[1:]} == {str(i) for i in range(1, 11)}


@pytest.mark.parametrize("shops", [1, 100, 450])
def test_every_generated_row_validates(tmp_path, shops):
    paths = generate_range(START, START + DAY, tmp_path, shops=shops, drift_from=START + DAY)
    for path in paths:
        summary = validate_file(path, load_schema("drone"))
        assert (summary.valid, summary.bad) == (24 * shops, 0)


def test_drift_changes_the_rules(tmp_path):
    types = list(generate.WINDOWS)
    grid = np.array(np.meshgrid(np.arange(len(types)), np.arange(24), np.arange(20), np.arange(20))).reshape(4, -1)
    shop_types = np.array(types)[grid[0]]
    before = busy_probability(shop_types, grid[1], grid[2], grid[3])
    after = busy_probability(shop_types, grid[1], grid[2], grid[3], drift=True)
    assert set(np.unique(before)) == {generate.P_BUSY_OUTSIDE, generate.P_BUSY_IN_WINDOW}
    assert (before != after).mean() > 0.2  # a model of the old rule is badly wrong on the new one

    drift_day = START + DAY
    plain = generate_range(START, drift_day, tmp_path / "plain")
    drifted = generate_range(START, drift_day, tmp_path / "drifted", drift_from=drift_day)
    assert plain[0].read_bytes() == drifted[0].read_bytes()  # before the drift date nothing changes
    assert plain[1].read_bytes() != drifted[1].read_bytes()
    assert [json.loads(meta_path(p).read_text())["drift"] for p in drifted] == [False, True]


@pytest.mark.parametrize("shops", [1, 30, 100])
def test_first_drifted_row_is_where_the_drift_day_first_differs(shops):
    layout = generate.make_shops(7, shops, load_schema("drone"))
    hours = np.repeat(np.arange(24), shops)
    types, x, y = (np.tile(a, 24) for a in (layout.types, layout.x, layout.y))
    before = busy_probability(types, hours, x, y)
    after = busy_probability(types, hours, x, y, drift=True)
    first = generate.first_drifted_row(7, shops)
    assert first is not None and first > 0
    assert (before[:first] == after[:first]).all() and before[first] != after[first]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (("restaurant", 12, 0, 0), generate.P_BUSY_IN_WINDOW),  # lunch
        (("restaurant", 16, 0, 0), generate.P_BUSY_OUTSIDE),
        (("pharmacy", 8, 19, 19), generate.P_BUSY_IN_WINDOW),  # morning
        (("pharmacy", 12, 0, 0), generate.P_BUSY_OUTSIDE),  # window ends at 12 on the outskirts...
        (("pharmacy", 12, 9, 9), generate.P_BUSY_IN_WINDOW),  # ...and an hour later in the centre
        (("electronics", 3, 9, 9), generate.P_BUSY_OUTSIDE),
    ],
)
def test_busy_rule_examples(rows, expected):
    shop_type, hour, x, y = rows
    assert busy_probability([shop_type], [hour], [x], [y])[0] == expected


def test_unknown_shop_type_is_refused():
    with pytest.raises(ValueError, match="unknown shop type 'bakery'"):
        busy_probability(["bakery"], [1], [1], [1])


@pytest.mark.parametrize(("noise", "low", "high"), [(0.0, 0.96, 0.99), (0.05, 0.90, 0.95), (0.5, 0.5, 0.5)])
def test_bayes_accuracy_is_sensible(tmp_path, noise, low, high):
    paths = generate_range(START, START + 2 * DAY, tmp_path, noise=noise, drift_from=START + DAY)
    assert low - 1e-9 <= bayes_accuracy(paths) <= high + 1e-9
    assert bayes_accuracy(paths) == pytest.approx(bayes_accuracy([meta_path(p) for p in paths]))


def test_bayes_accuracy_matches_the_generated_labels(tmp_path):
    """The Bayes-optimal predictor (busy iff p > 0.5) should score what the sidecars say, within sampling error."""
    paths = generate_range(START, START + 3 * DAY, tmp_path, shops=300, noise=0.1,
                           drift_from=START + 2 * DAY)
    hits = total = 0
    for path in paths:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        drift = json.loads(meta_path(path).read_text())["drift"]
        hours = [int(r["observed_at"][11:13]) for r in rows]
        p = busy_probability([r["shop_type"] for r in rows], hours, [int(r["x"]) for r in rows],
                             [int(r["y"]) for r in rows], drift=drift)
        predicted = noisy_probability(p, 0.1) > 0.5
        hits += int((predicted == np.array([r["busy"] == "1" for r in rows])).sum())
        total += len(rows)
    assert hits / total == pytest.approx(bayes_accuracy(paths), abs=0.01)


def test_identical_files_are_left_alone_and_no_temp_files_remain(tmp_path):
    paths = generate_range(START, START + DAY, tmp_path)
    old = 1_000_000_000
    for path in paths:
        os.utime(path, ns=(old, old))
    generate_range(START, START + DAY, tmp_path)
    assert [p.stat().st_mtime_ns for p in paths] == [old, old]
    generate_range(START, START + DAY, tmp_path, seed=8)  # other content: replaced
    assert [p.stat().st_mtime_ns != old for p in paths] == [True, True]
    assert not [name for name in _files(tmp_path) if name.startswith(".") or name.endswith(".tmp")]


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(generate.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        generate_range(START, START, tmp_path)
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"end": START - DAY}, "before start"),
        ({"noise": 0.7}, "noise"),
        ({"shops": 0}, "shops"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    arguments = {"start": START, "end": START, "out_dir": tmp_path, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_range(**arguments)
