"""Which of a family's rules applies when: no drift, an abrupt drift, a gradual drift or a recurring concept.

A :class:`Scenario` gives, for every hour of every day, the share of rows that follow the family's drifted rule
(:mod:`include.demo.rules`); the others follow its base rule. A row's true busy probability is then the mixture
``(1 - share) * p_base + share * p_drifted`` (which rule a row follows is not observable), so the Bayes-optimal
accuracy stays exact under a gradual drift.

* ``abrupt``: share 1 from ``drift_from`` on.
* ``gradual``: the share grows linearly, hour by hour, from ``1 / (24 * drift_days)`` at ``drift_from``'s first hour
  to 1 after ``drift_days`` days (default 2).
* ``recurring``: share 1 for ``drift_days`` days from ``drift_from`` (default 7), then the base rule returns.

Pure: no randomness, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Sequence

import numpy as np

from include.demo.rules import HOURS, Rule, family

DRIFT_KINDS = ("abrupt", "gradual", "recurring")
DEFAULT_DRIFT_DAYS = {"abrupt": None, "gradual": 2, "recurring": 7}


@dataclass(frozen=True)
class Change:
    """A change of concept: from ``day`` on, rows stop following ``before`` (the rule in force until then)."""

    day: date
    before: Rule


@dataclass(frozen=True)
class Scenario:
    """A family's rules over time (see the module docstring).

    Attributes:
        family: A family of :data:`include.demo.rules.FAMILIES`.
        drift_from: The first day of the drift; None: the base rule throughout.
        drift_kind: ``abrupt``, ``gradual`` or ``recurring``.
        drift_days: ``gradual``: days for the drifted rule's share to reach 1; ``recurring``: days it lasts.
            None: the kind's default (2 and 7).
    """

    family: str = "demo"
    drift_from: date | None = None
    drift_kind: str = "abrupt"
    drift_days: int | None = None

    def __post_init__(self) -> None:
        family(self.family)  # an unknown family is refused here
        if self.drift_kind not in DRIFT_KINDS:
            raise ValueError(f"drift kind must be one of {DRIFT_KINDS}, not {self.drift_kind!r}")
        if self.drift_days is not None and (self.drift_kind == "abrupt" or self.drift_days < 1):
            raise ValueError("drift_days is a positive number of days, for a gradual or recurring drift only")

    @property
    def is_default(self) -> bool:
        """The demo's own scenario (its sidecars carry no scenario fields)."""
        return self.family == "demo" and self.drift_kind == "abrupt"

    def days(self) -> int | None:
        return self.drift_days if self.drift_days is not None else DEFAULT_DRIFT_DAYS[self.drift_kind]

    def shares(self, day: date) -> np.ndarray:
        """The drifted rule's share of rows at each hour of ``day`` (24 floats in [0, 1])."""
        if self.drift_from is None or day < self.drift_from:
            return np.zeros(HOURS)
        since = (day - self.drift_from).days * HOURS + np.arange(HOURS)  # hours since the drift began
        if self.drift_kind == "gradual":
            return np.minimum(1.0, (since + 1) / (HOURS * self.days()))
        if self.drift_kind == "recurring" and since[0] >= HOURS * self.days():
            return np.zeros(HOURS)
        return np.ones(HOURS)

    def probability(self, day: date, shop_types: Sequence[str] | np.ndarray, hours: Sequence[int] | np.ndarray,
                    x: Sequence[int] | np.ndarray, y: Sequence[int] | np.ndarray) -> np.ndarray:
        """The true busy probability of rows observed on ``day`` (``hours`` 0..23), the rules mixed by share."""
        rules = family(self.family)
        share = self.shares(day)[np.asarray(hours)]
        base = rules.base.probability(shop_types, hours, x, y)
        if not share.any():
            return base
        drifted = rules.drifted.probability(shop_types, hours, x, y)
        return np.where(share >= 1.0, drifted, (1.0 - share) * base + share * drifted)

    def changes(self) -> list[Change]:
        """The changes of concept, in order: the drift's start, and a recurring concept's return."""
        if self.drift_from is None:
            return []
        rules = family(self.family)
        out = [Change(self.drift_from, rules.base)]
        if self.drift_kind == "recurring":
            out.append(Change(self.drift_from + timedelta(days=self.days()), rules.drifted))
        return out

    def first_changed_rows(self, days: Sequence[date], shop_types: Sequence[str] | np.ndarray,
                           hours: Sequence[int] | np.ndarray, x: Sequence[int] | np.ndarray,
                           y: Sequence[int] | np.ndarray) -> list[int | None]:
        """Per change, the position (in these rows, in stream order) of the first row on or after the change's day
        whose true probability differs from the rule in force before it: where a detection delay counts from.

        None for a change the rows never show."""
        days_arr = np.asarray([d.toordinal() for d in days])
        types, hours, x, y = np.asarray(shop_types), np.asarray(hours), np.asarray(x), np.asarray(y)
        out: list[int | None] = []
        for change in self.changes():
            found = None
            for ordinal in np.unique(days_arr[days_arr >= change.day.toordinal()]):
                rows = np.flatnonzero(days_arr == ordinal)
                day = date.fromordinal(int(ordinal))
                now = self.probability(day, types[rows], hours[rows], x[rows], y[rows])
                differs = np.flatnonzero(now != change.before.probability(types[rows], hours[rows], x[rows], y[rows]))
                if differs.size:
                    found = int(rows[differs[0]])
                    break
            out.append(found)
        return out
