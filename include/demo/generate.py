"""Deterministic generator of drone-delivery shop observations, one CSV file per day, in the ``drone`` schema.

It stands in for the real feed: every shop reports every hour whether it is busy, by a known rule of shop type x
hour x location, with label noise and optional concept drift. Because it knows the true probabilities it also
records, beside each file, the best accuracy any model could reach on it (Bayes-optimal), so training results can
be judged against a ceiling.

The rule (hours are UTC hours of the observation):

* Each shop type has busy windows: grocery 08-10 and 16-20 (before work, after work), pharmacy 07-12 (morning
  prescriptions), restaurant 11-14 and 18-22 (lunch, dinner), electronics 12-19 (afternoon browsing),
  florist 09-13 and 15-18 (day trade). A window ``a-b`` covers hours a..b-1.
* Shops in the centre of the 20x20 grid (x and y both in 5..14) are busier: each window starts an hour earlier
  and ends an hour later for them.
* Inside its window a shop is busy with probability 0.97, outside with 0.02; the observed label is then flipped
  with probability ``noise``.
* Drift (from ``drift_from`` on): each type takes over the next type's windows (grocery gets pharmacy's,
  pharmacy restaurant's, ... florist grocery's) and the location effect reverses: the outskirts get the wider
  windows, the centre the plain ones.

That is the ``demo`` family, the default. Other families of rules (:mod:`include.demo.rules`: rules that ignore time,
rules on one feature, an XOR of location and type, imbalanced labels), other kinds of drift (gradual, a recurring
concept: :mod:`include.demo.scenario`) and fewer rows per day (``shops_per_hour``) serve the generalisation
benchmark; their sidecars also say the family, the drift kind, the drifted rule's share of the file and the expected
share of busy labels. With the defaults, files and sidecars are byte for byte what they always were.

Files are byte-identical for the same arguments: the shop layout comes from the seed alone and each day has its
own random stream seeded by (seed, date), so a sub-range reproduces the same files. This module must never
overwrite a file with identical content, nor expose a half-written file: every file is written to a hidden
temporary name in the same folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Iterable

import numpy as np

from include.demo.rules import (  # noqa: F401 - the demo rule's names, re-exported for callers
    CENTRE, HOURS, P_BUSY_IN_WINDOW, P_BUSY_OUTSIDE, WINDOWS, busy_probability, noisy_probability,
)
from include.demo.scenario import Scenario
from include.schema import CsvSchema, load_schema

SCHEMA_NAME = "drone"
# Random streams: the layout's depends on the seed only, each day's on the seed and the date; which shops report in
# each hour (with ``shops_per_hour``) on a stream of its own, so the labels are the same draws either way.
_LAYOUT_STREAM = 0
_DAY_STREAM = 1
_SAMPLE_STREAM = 2


@dataclass(frozen=True)
class Shops:
    """The fixed shop layout: ids 1..n, a type and a grid cell each."""

    ids: np.ndarray
    types: np.ndarray  # str
    x: np.ndarray
    y: np.ndarray


def file_name(day: date) -> str:
    """The observation file's name for a day (its observations' UTC date)."""
    return f"observations_{day.isoformat()}.csv"


def meta_path(csv_path: Path | str) -> Path:
    """The sidecar JSON beside an observation file (a ``.meta.json`` path is returned as is)."""
    path = Path(csv_path)
    if path.name.endswith(".meta.json"):
        return path
    return path.with_name(path.name.removesuffix(".csv") + ".meta.json")


def _schema() -> CsvSchema:
    schema = load_schema(SCHEMA_NAME)
    types = schema.columns[schema.index("shop_type")].categories
    if set(types) != set(WINDOWS):
        raise ValueError(f"schema {schema.id} has shop types {types}; the generator has rules for {sorted(WINDOWS)}")
    return schema


def first_drifted_row(seed: int, shops: int) -> int | None:
    """Position, within a drift day's rows (hour-major, shops in id order), of the first row whose true busy
    probability differs from the undrifted rule's, or None if the rules agree everywhere for this layout.

    The drifted rule differs only in some hours, so a drift starting at a day's midnight becomes visible in the
    data only from this row on (the point a detection delay is measured from)."""
    layout = make_shops(seed, shops, _schema())
    hours = np.repeat(np.arange(HOURS), shops)
    types, x, y = (np.tile(a, HOURS) for a in (layout.types, layout.x, layout.y))
    changed = np.flatnonzero(busy_probability(types, hours, x, y) != busy_probability(types, hours, x, y, drift=True))
    return int(changed[0]) if changed.size else None


def make_shops(seed: int, count: int, schema: CsvSchema) -> Shops:
    """Lay out ``count`` shops: types as even as possible in random order, each on its own cell while cells last."""
    types = schema.columns[schema.index("shop_type")].categories
    xcol, ycol = schema.columns[schema.index("x")], schema.columns[schema.index("y")]
    width, height = int(xcol.max - xcol.min) + 1, int(ycol.max - ycol.min) + 1
    rng = np.random.default_rng([seed, _LAYOUT_STREAM])
    shop_types = rng.permutation(np.resize(np.array(types), count))
    cells = rng.choice(width * height, size=count, replace=count > width * height)
    return Shops(
        ids=np.arange(1, count + 1),
        types=shop_types,
        x=cells % width + int(xcol.min),
        y=cells // width + int(ycol.min),
    )


def _day_rows(day: date, shops: Shops, seed: int, noise: float, scenario: Scenario,
              shops_per_hour: int | None) -> tuple[list[str], dict]:
    """A day's observations as CSV lines (every shop every hour, or ``shops_per_hour`` random shops each hour, in
    id order) and what the sidecar says of them: Bayes-optimal accuracy, expected share of busy labels."""
    n = len(shops.ids)
    hours = np.repeat(np.arange(HOURS), n)
    types, x, y = (np.tile(a, HOURS) for a in (shops.types, shops.x, shops.y))
    p = scenario.probability(day, types, hours, x, y)
    rng = np.random.default_rng([seed, _DAY_STREAM, day.toordinal()])
    truth = rng.random(hours.size) < p
    flipped = rng.random(hours.size) < noise
    busy = truth ^ flipped
    kept = np.arange(hours.size)
    if shops_per_hour is not None and shops_per_hour < n:
        pick = np.random.default_rng([seed, _SAMPLE_STREAM, day.toordinal()])
        kept = np.concatenate([h * n + np.sort(pick.choice(n, shops_per_hour, replace=False)) for h in range(HOURS)])
    p_noisy = noisy_probability(p[kept], noise)
    facts = {"bayes": float(np.maximum(p_noisy, 1.0 - p_noisy).mean()), "positive_rate": float(p_noisy.mean())}
    stamps = [f"{day.isoformat()}T{h:02d}:00:00Z," for h in range(HOURS)]
    shop_text = [f"{i},{kind},{col},{row}," for i, kind, col, row in zip(shops.ids, shops.types, shops.x, shops.y)]
    labels = busy[kept].astype(np.int8).tolist()
    lines = [stamps[k // n] + shop_text[k % n] + "01"[label] for k, label in zip(kept.tolist(), labels)]
    return lines, facts


def _write_atomic(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` via a hidden temporary file and a rename; leave an identical file alone.

    Returns:
        True if the file was written, False if it already held exactly ``data``.
    """
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    # A dot-name with a .tmp suffix: no reader globbing observations_*.csv can pick it up half-written.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); the ingest may run as another user.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _write_day(day: date, out: Path, layout: Shops, schema: CsvSchema, *, seed: int, noise: float,
               scenario: Scenario, shops_per_hour: int | None) -> Path:
    """Write one day's observation file and its sidecar."""
    lines, facts = _day_rows(day, layout, seed, noise, scenario, shops_per_hour)
    csv_path = out / file_name(day)
    shares = scenario.shares(day)
    meta = {
        "file": csv_path.name,
        "date": day.isoformat(),
        "rows": len(lines),
        "bayes_accuracy": round(facts["bayes"], 6),
        "drift": bool(shares.any()),
        "seed": seed,
        "shops": len(layout.ids),
        "noise": noise,
        "schema": schema.id,
    }
    # The demo's own files keep exactly the fields they always had (byte-identical sidecars).
    if not scenario.is_default or shops_per_hour is not None:
        meta.update(family=scenario.family, drift_kind=scenario.drift_kind, drift_share=round(float(shares.mean()), 6),
                    positive_rate=round(facts["positive_rate"], 6), shops_per_hour=shops_per_hour)
    # The sidecar goes first, so a CSV that is visible always has its sidecar.
    _write_atomic(meta_path(csv_path), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    text = schema.header_line() + "\n" + "\n".join(lines) + "\n"
    _write_atomic(csv_path, text.encode("utf-8"))
    return csv_path


def _check_arguments(shops: int, noise: float, shops_per_hour: int | None, schema: CsvSchema) -> None:
    id_col = schema.columns[schema.index("shop_id")]
    if not 1 <= shops <= int(id_col.max):
        raise ValueError(f"shops must be between 1 and {int(id_col.max)}, got {shops}")
    if not 0.0 <= noise <= 0.5:
        raise ValueError(f"noise is a flip probability between 0 and 0.5, got {noise}")
    if shops_per_hour is not None and not 1 <= shops_per_hour:
        raise ValueError(f"shops_per_hour must be at least 1, got {shops_per_hour}")


def _days(start: date, end: date) -> list[date]:
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def generate_range(
    start: date,
    end: date,
    out_dir: Path | str,
    *,
    seed: int = 7,
    shops: int = 100,
    noise: float = 0.05,
    drift_from: date | None = None,
    family: str = "demo",
    drift_kind: str = "abrupt",
    drift_days: int | None = None,
    shops_per_hour: int | None = None,
) -> list[Path]:
    """Write one observation file (and sidecar) per day from ``start`` to ``end`` inclusive.

    Args:
        start: The first observation date (UTC).
        end: The last observation date, inclusive.
        out_dir: The folder to write into (created if missing).
        seed: Fixes the shop layout and every day's draws.
        shops: How many shops (ids 1..shops).
        noise: Probability that an observed label is flipped.
        drift_from: From this date on, the drifted rule applies; None for no drift.
        family: The rules (:data:`include.demo.rules.FAMILIES`); ``demo`` is the demo's.
        drift_kind: ``abrupt``, ``gradual`` or ``recurring`` (see :class:`include.demo.scenario.Scenario`).
        drift_days: Days of a gradual drift's transition or of a recurring concept's other rule (None: 2 and 7).
        shops_per_hour: Only this many shops (random, per hour) report each hour; None: every shop.

    Returns:
        The CSV paths, one per day in date order, whether written now or already there with identical content.
    """
    schema = _schema()
    _check_arguments(shops, noise, shops_per_hour, schema)
    scenario = Scenario(family=family, drift_from=drift_from, drift_kind=drift_kind, drift_days=drift_days)
    days = _days(start, end)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = make_shops(seed, shops, schema)
    return [_write_day(day, out, layout, schema, seed=seed, noise=noise, scenario=scenario,
                       shops_per_hour=shops_per_hour) for day in days]


def read_meta(path: Path | str) -> dict:
    """Read the sidecar of an observation file (given the CSV's path or the sidecar's)."""
    return json.loads(meta_path(path).read_text(encoding="utf-8"))


def bayes_accuracy(paths: Iterable[Path | str]) -> float:
    """The Bayes-optimal accuracy over several generated files: their sidecars' figures weighted by rows.

    Args:
        paths: Observation CSV paths (or their ``.meta.json`` sidecars).

    Returns:
        The best accuracy any model could reach on all their rows together.

    Raises:
        ValueError: No rows among the files.
    """
    rows = total = 0.0
    for path in paths:
        meta = read_meta(path)
        rows += meta["rows"]
        total += meta["rows"] * meta["bayes_accuracy"]
    if not rows:
        raise ValueError("no generated rows to aggregate")
    return total / rows
