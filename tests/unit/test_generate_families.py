"""Tests for the generator's rule families and drift kinds (include.demo.rules, include.demo.scenario): the sidecar's
Bayes-optimal accuracy is what the true rule scores on the labels, each family is the rule it says, gradual and
recurring drifts follow their schedule, and fewer shops per hour draw the same labels."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import date, timedelta

import numpy as np
import pytest

from include.demo import rules
from include.demo.generate import bayes_accuracy, first_drifted_row, generate_range, meta_path
from include.demo.rules import FAMILIES, noisy_probability
from include.demo.scenario import Scenario

START = date(2026, 1, 5)  # a Monday
DAY = timedelta(days=1)


def _rows(paths):
    """Every row of the files: dates, hours, types, x, y, labels (stream order)."""
    out = {"day": [], "hour": [], "type": [], "x": [], "y": [], "busy": []}
    for path in paths:
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                out["day"].append(date.fromisoformat(r["observed_at"][:10]))
                out["hour"].append(int(r["observed_at"][11:13]))
                out["type"].append(r["shop_type"])
                out["x"].append(int(r["x"]))
                out["y"].append(int(r["y"]))
                out["busy"].append(r["busy"] == "1")
    return {k: np.array(v) for k, v in out.items()}


def _true_p(scenario, rows):
    p = np.zeros(len(rows["busy"]))
    for day in np.unique(rows["day"]):
        at = rows["day"] == day
        p[at] = scenario.probability(day, rows["type"][at], rows["hour"][at], rows["x"][at], rows["y"][at])
    return p


def test_demo_files_are_byte_identical_to_before_the_families():
    """Golden digests of the demo's files and sidecars, computed before the families existed."""
    import tempfile
    from pathlib import Path

    expected = {7: "2f12757fa8ef6f2402af1b2bfd54a047aa60d934d02145d6b2cde74fc7fe54dd",
                3: "462f54c0e8ae450243f50a1f8d7c4dd06df212a47fbe8f850cb3fb92d66237fd"}
    arguments = {7: dict(seed=7, shops=30, noise=0.05, drift_from=START + DAY), 3: dict(seed=3, shops=100, noise=0.0)}
    with tempfile.TemporaryDirectory() as folder:
        for seed, kwargs in arguments.items():
            digest = hashlib.sha256()
            for path in generate_range(START, START + DAY, Path(folder) / str(seed), **kwargs):
                digest.update(path.read_bytes())
                digest.update(meta_path(path).read_bytes())
            assert digest.hexdigest() == expected[seed]


CASES = [(name, None) for name in FAMILIES] + [("demo", "gradual"), ("xor", "recurring"), ("location_type", "abrupt")]


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_sidecar_bayes_is_the_true_rules_accuracy_on_the_labels(tmp_path, family, kind):
    """Predicting busy iff the true (noisy) probability > 0.5 scores the sidecars' Bayes-optimal accuracy, and the
    labels' share of busy is the sidecars' expected one, within sampling error (~70,000 rows)."""
    noise = 0.1
    drift = dict(drift_from=START + DAY, drift_kind=kind) if kind else {}
    paths = generate_range(START, START + 2 * DAY, tmp_path, seed=5, shops=1000, noise=noise, family=family, **drift)
    rows = _rows(paths)
    scenario = Scenario(family=family, drift_from=drift.get("drift_from"), drift_kind=kind or "abrupt")
    p_noisy = noisy_probability(_true_p(scenario, rows), noise)
    hits = ((p_noisy > 0.5) == rows["busy"]).mean()
    assert hits == pytest.approx(bayes_accuracy(paths), abs=0.006)
    assert rows["busy"].mean() == pytest.approx(p_noisy.mean(), abs=0.006)
    metas = [json.loads(meta_path(p).read_text()) for p in paths]
    if family == "demo" and kind is None:
        assert "family" not in metas[0]  # the demo's own sidecars keep their fields
        return
    expected_positive = sum(m["positive_rate"] * m["rows"] for m in metas) / sum(m["rows"] for m in metas)
    assert expected_positive == pytest.approx(p_noisy.mean(), abs=1e-5)
    assert metas[0]["family"] == family


def test_each_family_is_the_rule_it_says():
    grid = np.array(np.meshgrid(np.arange(5), np.arange(24), np.arange(20), np.arange(20), indexing="ij")).reshape(4, -1)
    types, hours, x, y = np.array(rules.TYPES)[grid[0]], grid[1], grid[2], grid[3]

    def p(name, drifted=False):
        fam = FAMILIES[name]
        return (fam.drifted if drifted else fam.base).probability(types, hours, x, y)

    for name in FAMILIES:
        assert (p(name) != p(name, drifted=True)).mean() > 0.1, name  # a drift the model has to notice
    # location and type only: the hour changes nothing
    loc = p("location_type").reshape(5, 24, 20, 20)
    assert (loc == loc[:, :1]).all()
    # one feature each
    hour_only = p("hour_only").reshape(5, 24, 20, 20)
    assert (hour_only == hour_only[:1, :, :1, :1]).all()
    type_only = p("type_only").reshape(5, 24, 20, 20)
    assert (type_only == type_only[:, :1, :1, :1]).all()
    # XOR: the type group alone says nothing (half busy either way); with the location half it says everything
    xor = p("xor") == rules.P_BUSY_IN_WINDOW
    in_group = np.isin(types, ["grocery", "pharmacy", "restaurant"])
    assert xor[in_group].mean() == 0.5 and xor[~in_group].mean() == 0.5
    assert (xor[in_group & (x < 10)] == False).all() and (xor[in_group & (x >= 10)] == True).all()  # noqa: E712
    # the demo family is the demo rule
    assert (p("demo") == rules.busy_probability(types, hours, x, y)).all()
    assert (p("demo", drifted=True) == rules.busy_probability(types, hours, x, y, drift=True)).all()


def test_imbalanced_family_has_about_ten_percent_positives(tmp_path):
    paths = generate_range(START, START + DAY, tmp_path, shops=400, family="imbalanced")
    metas = [json.loads(meta_path(p).read_text()) for p in paths]
    assert all(0.08 <= m["positive_rate"] <= 0.12 for m in metas)
    assert 0.08 <= _rows(paths)["busy"].mean() <= 0.12


def test_gradual_drift_share_grows_over_two_days():
    scenario = Scenario(family="demo", drift_from=START + DAY, drift_kind="gradual")
    assert not scenario.shares(START).any()
    first, second, third = (scenario.shares(START + k * DAY) for k in (1, 2, 3))
    ramp = np.concatenate([first, second])
    assert (np.diff(ramp) > 0).all() and ramp[0] == pytest.approx(1 / 48) and ramp[-1] == 1.0
    assert (third == 1.0).all()
    # a half-way row is the mixture of both rules
    args = (["grocery"], [9], [0], [0])
    mixed = scenario.probability(START + 2 * DAY, *args)
    base, drifted = FAMILIES["demo"].base.probability(*args), FAMILIES["demo"].drifted.probability(*args)
    share = second[9]
    assert mixed == pytest.approx((1 - share) * base + share * drifted)


def test_recurring_concept_returns_to_the_first_rule(tmp_path):
    week = 7 * DAY
    paths = generate_range(START, START + 3 * week - DAY, tmp_path, shops=20, family="xor", drift_from=START + week,
                           drift_kind="recurring")
    metas = [json.loads(meta_path(p).read_text()) for p in paths]
    assert [m["drift"] for m in metas] == [False] * 7 + [True] * 7 + [False] * 7
    plain = generate_range(START, START + 3 * week - DAY, tmp_path / "plain", shops=20, family="xor")
    # week 3 is drawn from the base rule again: the same bytes as without any drift
    assert [p.read_bytes() for p in paths[14:]] == [p.read_bytes() for p in plain[14:]]
    assert paths[7].read_bytes() != plain[7].read_bytes()


def test_fewer_shops_per_hour_keep_the_same_draws(tmp_path):
    (full,) = generate_range(START, START, tmp_path / "full", shops=100, family="hour_only")
    (some,) = generate_range(START, START, tmp_path / "some", shops=100, family="hour_only", shops_per_hour=30)
    full_lines = set(full.read_text().splitlines()[1:])
    some_lines = some.read_text().splitlines()[1:]
    assert len(some_lines) == 24 * 30
    assert set(some_lines) <= full_lines  # the kept rows carry the labels the full file drew for them
    for hour in range(24):
        ids = [int(line.split(",")[1]) for line in some_lines[hour * 30:(hour + 1) * 30]]
        assert ids == sorted(set(ids))
    assert json.loads(meta_path(some).read_text())["shops_per_hour"] == 30


def test_first_changed_rows_match_the_demos_first_drifted_row(tmp_path):
    paths = generate_range(START, START + 2 * DAY, tmp_path, seed=7, shops=30, drift_from=START + DAY)
    rows = _rows(paths)
    scenario = Scenario(drift_from=START + DAY)
    (first,) = scenario.first_changed_rows(rows["day"], rows["type"], rows["hour"], rows["x"], rows["y"])
    assert first == 24 * 30 + first_drifted_row(7, 30)
    recurring = Scenario(family="hour_only", drift_from=START + DAY, drift_kind="recurring", drift_days=1)
    starts = recurring.first_changed_rows(rows["day"], rows["type"], rows["hour"], rows["x"], rows["y"])
    assert starts == [24 * 30 + 9 * 30, 2 * 24 * 30 + 9 * 30]  # 09:00 is the first hour the two rules disagree


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"family": "bakery"}, "unknown rule family"),
    ({"drift_kind": "sideways", "drift_from": START}, "drift kind"),
    ({"drift_days": 3}, "drift_days"),
    ({"shops_per_hour": 0}, "shops_per_hour"),
])
def test_bad_scenario_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_range(START, START, tmp_path, **kwargs)
