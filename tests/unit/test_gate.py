"""The promotion gate's arithmetic: McNemar's exact p-value, the tolerance, the floor and the minimum rows."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from include.lifecycle.gate import compare, decide, mcnemar_p

RULE = {"tolerance": 0.005, "floor": None, "min_rows": 200}


@pytest.mark.parametrize(("b", "c", "expected"), [
    (0, 0, 1.0),  # no discordant pair: no evidence either way
    (0, 5, 2 / 32),  # 2 * P(X <= 0), n = 5
    (1, 9, 2 * 11 / 1024),  # 2 * (1 + 10) / 2^10
    (9, 1, 2 * 11 / 1024),  # two-sided: symmetric
    (3, 3, 1.0),  # 2 * 42/64 > 1 is capped
])
def test_mcnemar_exact_two_sided(b, c, expected):
    assert mcnemar_p(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_large_counts_do_not_underflow():
    p = mcnemar_p(600, 700)
    assert 0.0 < p < 0.01
    n, k = 1300, 600
    assert p == pytest.approx(min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n), rel=1e-9)


def test_compare_counts_discordant_pairs():
    cand = np.array([1, 1, 0, 0, 1], bool)
    champ = np.array([1, 0, 1, 0, 0], bool)
    out = compare(cand, champ)
    assert out["rows"] == 5 and out["mcnemar_b"] == 2 and out["mcnemar_c"] == 1
    assert out["candidate_accuracy"] == pytest.approx(0.6) and out["champion_accuracy"] == pytest.approx(0.4)


def test_a_candidate_within_the_tolerance_is_promoted():
    assert decide(0.900, 0.905, 500, **RULE)[0] == "promote"  # exactly 0.5 points below
    assert decide(0.95, 0.90, 500, **RULE)[0] == "promote"


def test_a_candidate_beyond_the_tolerance_is_rejected_with_both_accuracies():
    decision, reason = decide(0.8999, 0.905, 500, **RULE)
    assert decision == "reject" and "0.8999" in reason and "0.9050" in reason


def test_the_floor_rejects_even_a_better_candidate():
    assert decide(0.65, 0.60, 500, **{**RULE, "floor": 0.7})[0] == "reject"
    assert decide(0.75, 0.60, 500, **{**RULE, "floor": 0.7})[0] == "promote"


def test_too_few_rows_wait():
    assert decide(0.99, 0.10, 199, **RULE)[0] == "wait"
    assert decide(0.99, 0.10, 200, **RULE)[0] == "promote"
