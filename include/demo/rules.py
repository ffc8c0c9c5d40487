"""The generator's rules: the true probability that a shop is busy, for every family of data the project is tested on.

A rule maps rows (shop type, UTC hour, grid x, y) to the probability that the shop is busy, before label noise: a
row is "in" the rule (busy with probability ``p_in``) or not (``p_out``). Each family has a base rule and a drifted
rule (what the concept becomes after a drift); :mod:`include.demo.scenario` says which applies when.

Families (:data:`FAMILIES`):

* ``demo``: the demo's rule (see :mod:`include.demo.generate`): per-type busy hour windows, an hour wider on each
  side in the centre of the grid; drifted: each type takes the next type's windows and the wider windows move to the
  outskirts.
* ``location_type``: ignores time: busy iff ``(type index + quadrant) % 3 == 0`` (quadrants of the grid split at
  10 on both axes); drifted: ``== 1``.
* ``hour_only``: one feature: busy from 09:00 to 17:00; drifted: from 14:00 to 22:00.
* ``type_only``: one feature: grocery and restaurant busy; drifted: pharmacy, electronics and florist.
* ``xor``: an interaction of location and type: busy iff ``(x < 10) XOR (type is grocery, pharmacy or restaurant)``;
  drifted: the same with ``y`` for ``x``.
* ``imbalanced``: about 10 % positive labels at 5 % noise: one busy hour per type (three in the centre), never busy
  outside it; drifted as the demo's rule.

Pure functions of the rows: no randomness, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

HOURS = 24
P_BUSY_IN_WINDOW = 0.97
P_BUSY_OUTSIDE = 0.02
# Busy windows per shop type, as (first hour, end hour exclusive), before drift.
WINDOWS: dict[str, tuple[tuple[int, int], ...]] = {
    "grocery": ((8, 10), (16, 20)),
    "pharmacy": ((7, 12),),
    "restaurant": ((11, 14), (18, 22)),
    "electronics": ((12, 19),),
    "florist": ((9, 13), (15, 18)),
}
TYPES = tuple(WINDOWS)  # the drone schema's categories, in its order
CENTRE = (5, 14)  # inclusive bounds of the central block, on both axes
_RARE_HOURS = {"grocery": 17, "pharmacy": 9, "restaurant": 12, "electronics": 15, "florist": 10}


def type_index(shop_types: Sequence[str] | np.ndarray) -> np.ndarray:
    """Each row's shop type as its index in :data:`TYPES`."""
    lookup = {name: i for i, name in enumerate(TYPES)}
    try:
        return np.fromiter((lookup[t] for t in shop_types), dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"unknown shop type {exc.args[0]!r}; known: {list(TYPES)}") from None


def central(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether each cell is in the central block of the grid."""
    return (x >= CENTRE[0]) & (x <= CENTRE[1]) & (y >= CENTRE[0]) & (y <= CENTRE[1])


@dataclass(frozen=True)
class Rule:
    """A rule: rows in it are busy with probability ``p_in``, the others with ``p_out`` (subclasses say which)."""

    p_in: float = P_BUSY_IN_WINDOW
    p_out: float = P_BUSY_OUTSIDE

    def inside(self, t: np.ndarray, hours: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def probability(self, shop_types: Sequence[str] | np.ndarray, hours: Sequence[int] | np.ndarray,
                    x: Sequence[int] | np.ndarray, y: Sequence[int] | np.ndarray) -> np.ndarray:
        """The true probability that each row's shop is busy (before label noise)."""
        t = type_index(shop_types)
        inside = self.inside(t, np.asarray(hours), np.asarray(x), np.asarray(y))
        return np.where(inside, self.p_in, self.p_out)


@dataclass(frozen=True)
class WindowRule(Rule):
    """Busy inside per-type hour windows, one hour wider on each side in the centre (or, reversed, the outskirts)."""

    windows: tuple[tuple[tuple[int, int], ...], ...] = ()  # per type, in TYPES order
    wide_in_centre: bool = True

    def inside(self, t: np.ndarray, hours: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        wide = central(x, y) == self.wide_in_centre
        return np.where(wide, self._table(1)[t, hours], self._table(0)[t, hours])

    def _table(self, widen: int) -> np.ndarray:
        table = np.zeros((len(TYPES), HOURS), dtype=bool)
        for i, spans in enumerate(self.windows):
            for start, end in spans:
                table[i, max(0, start - widen): min(HOURS, end + widen)] = True
        return table

    def rotated(self) -> "WindowRule":
        """The drifted rule: each type takes the next type's windows, and the wide windows change side."""
        spans = self.windows[1:] + self.windows[:1]
        return WindowRule(p_in=self.p_in, p_out=self.p_out, windows=spans, wide_in_centre=not self.wide_in_centre)


@dataclass(frozen=True)
class QuadrantRule(Rule):
    """Ignores time: busy iff ``(type index + quadrant) % 3 == residue``; quadrant = 2 * (y >= 10) + (x >= 10)."""

    residue: int = 0

    def inside(self, t: np.ndarray, hours: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        quadrant = 2 * (y >= 10) + (x >= 10)
        return (t + quadrant) % 3 == self.residue


@dataclass(frozen=True)
class HourRule(Rule):
    """One feature: busy from ``start`` to ``end`` (exclusive), UTC hours."""

    start: int = 9
    end: int = 17

    def inside(self, t: np.ndarray, hours: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (hours >= self.start) & (hours < self.end)


@dataclass(frozen=True)
class TypeRule(Rule):
    """One feature: busy iff the shop's type is one of ``busy_types``."""

    busy_types: tuple[str, ...] = ()

    def inside(self, t: np.ndarray, hours: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.isin(t, [TYPES.index(name) for name in self.busy_types])


@dataclass(frozen=True)
class XorRule(Rule):
    """Busy iff ``(axis < 10) XOR (type is one of busy_types)``: neither feature alone tells anything."""

    axis: str = "x"
    busy_types: tuple[str, ...] = ("grocery", "pharmacy", "restaurant")

    def inside(self, t: np.ndarray, hours: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        low = (x if self.axis == "x" else y) < 10
        return low != np.isin(t, [TYPES.index(name) for name in self.busy_types])


@dataclass(frozen=True)
class Family:
    """A family of data: its base rule, the rule it drifts to, and one line saying what it is."""

    name: str
    base: Rule
    drifted: Rule
    description: str


DEMO = WindowRule(windows=tuple(WINDOWS[name] for name in TYPES))
_RARE = WindowRule(windows=tuple(((_RARE_HOURS[name], _RARE_HOURS[name] + 1),) for name in TYPES), p_out=0.0)
_FAMILY_LIST = (
    Family("demo", DEMO, DEMO.rotated(), "the demo's rule: type x hour windows, wider in the centre"),
    Family("location_type", QuadrantRule(residue=0), QuadrantRule(residue=1), "location and type only (no time)"),
    Family("hour_only", HourRule(start=9, end=17), HourRule(start=14, end=22), "hour only (one feature)"),
    Family("type_only", TypeRule(busy_types=("grocery", "restaurant")),
           TypeRule(busy_types=("pharmacy", "electronics", "florist")), "shop type only (one feature)"),
    Family("xor", XorRule(axis="x"), XorRule(axis="y"), "XOR of location and type"),
    Family("imbalanced", _RARE, _RARE.rotated(), "one busy hour per type: about 10 % positives at 5 % noise"),
)
FAMILIES: dict[str, Family] = {f.name: f for f in _FAMILY_LIST}


def family(name: str) -> Family:
    """The family called ``name``; a clear error for an unknown one."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown rule family {name!r}; known: {sorted(FAMILIES)}") from None


def busy_probability(shop_types: Sequence[str] | np.ndarray, hours: Sequence[int] | np.ndarray,
                     x: Sequence[int] | np.ndarray, y: Sequence[int] | np.ndarray, *, drift: bool = False) -> np.ndarray:
    """The demo rule's true probability that a shop is busy, before label noise (``drift``: the drifted rule)."""
    rules = FAMILIES["demo"]
    return (rules.drifted if drift else rules.base).probability(shop_types, hours, x, y)


def noisy_probability(p: np.ndarray, noise: float) -> np.ndarray:
    """The probability of an observed busy label once labels are flipped with probability ``noise``."""
    return p * (1.0 - noise) + (1.0 - p) * noise
