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
from typing import Iterable, Sequence

import numpy as np

from include.schema import CsvSchema, load_schema

SCHEMA_NAME = "drone"
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
CENTRE = (5, 14)  # inclusive bounds of the central block, on both axes
# Random streams: the layout's depends on the seed only, each day's on the seed and the date.
_LAYOUT_STREAM = 0
_DAY_STREAM = 1


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


def _hour_table(types: Sequence[str], widen: int, drift: bool) -> np.ndarray:
    """Boolean table [type, hour]: is the hour inside one of the type's windows (widened by ``widen`` hours)."""
    table = np.zeros((len(types), HOURS), dtype=bool)
    for i, shop_type in enumerate(types):
        # Under drift a type takes over the next type's windows.
        source = types[(i + 1) % len(types)] if drift else shop_type
        for start, end in WINDOWS[source]:
            table[i, max(0, start - widen) : min(HOURS, end + widen)] = True
    return table


def busy_probability(
    shop_types: Sequence[str] | np.ndarray,
    hours: Sequence[int] | np.ndarray,
    x: Sequence[int] | np.ndarray,
    y: Sequence[int] | np.ndarray,
    *,
    drift: bool = False,
) -> np.ndarray:
    """The true probability that a shop is busy, before label noise (see the module docstring for the rule).

    Args:
        shop_types: Each row's shop type (one of the schema's categories).
        hours: Each row's UTC hour, 0..23.
        x: Each row's grid column.
        y: Each row's grid row.
        drift: Apply the drifted rule.

    Returns:
        One probability per row.
    """
    types = list(WINDOWS)
    type_index = _type_index(shop_types, types)
    hours, x, y = np.asarray(hours), np.asarray(x), np.asarray(y)
    central = (x >= CENTRE[0]) & (x <= CENTRE[1]) & (y >= CENTRE[0]) & (y <= CENTRE[1])
    wide = central != drift  # drift moves the wider windows from the centre to the outskirts
    plain_table = _hour_table(types, 0, drift)
    wide_table = _hour_table(types, 1, drift)
    busy = np.where(wide, wide_table[type_index, hours], plain_table[type_index, hours])
    return np.where(busy, P_BUSY_IN_WINDOW, P_BUSY_OUTSIDE)


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


def _type_index(shop_types: Sequence[str] | np.ndarray, types: list[str]) -> np.ndarray:
    lookup = {name: i for i, name in enumerate(types)}
    try:
        return np.fromiter((lookup[t] for t in shop_types), dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"unknown shop type {exc.args[0]!r}; known: {types}") from None


def noisy_probability(p: np.ndarray, noise: float) -> np.ndarray:
    """The probability of an observed busy label once labels are flipped with probability ``noise``."""
    return p * (1.0 - noise) + (1.0 - p) * noise


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


def _day_rows(day: date, shops: Shops, seed: int, noise: float, drift: bool) -> tuple[list[str], float]:
    """Every shop's observation for every hour of a day, as CSV lines, and their Bayes-optimal accuracy."""
    n = len(shops.ids)
    hours = np.repeat(np.arange(HOURS), n)
    types, x, y = (np.tile(a, HOURS) for a in (shops.types, shops.x, shops.y))
    p = busy_probability(types, hours, x, y, drift=drift)
    rng = np.random.default_rng([seed, _DAY_STREAM, day.toordinal()])
    truth = rng.random(hours.size) < p
    flipped = rng.random(hours.size) < noise
    busy = truth ^ flipped
    p_noisy = noisy_probability(p, noise)
    bayes = float(np.maximum(p_noisy, 1.0 - p_noisy).mean())
    stamps = [f"{day.isoformat()}T{h:02d}:00:00Z," for h in range(HOURS)]
    shop_text = [f"{i},{kind},{col},{row}," for i, kind, col, row in zip(shops.ids, shops.types, shops.x, shops.y)]
    labels = busy.astype(np.int8).tolist()
    lines = [stamps[k // n] + shop_text[k % n] + "01"[label] for k, label in enumerate(labels)]
    return lines, bayes


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


def _write_day(
    day: date, out: Path, layout: Shops, schema: CsvSchema, *, seed: int, noise: float, drift_from: date | None
) -> Path:
    """Write one day's observation file and its sidecar."""
    drift = drift_from is not None and day >= drift_from
    lines, bayes = _day_rows(day, layout, seed, noise, drift)
    csv_path = out / file_name(day)
    meta = {
        "file": csv_path.name,
        "date": day.isoformat(),
        "rows": len(lines),
        "bayes_accuracy": round(bayes, 6),
        "drift": drift,
        "seed": seed,
        "shops": len(layout.ids),
        "noise": noise,
        "schema": schema.id,
    }
    # The sidecar goes first, so a CSV that is visible always has its sidecar.
    _write_atomic(meta_path(csv_path), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    text = schema.header_line() + "\n" + "\n".join(lines) + "\n"
    _write_atomic(csv_path, text.encode("utf-8"))
    return csv_path


def _check_arguments(shops: int, noise: float, schema: CsvSchema) -> None:
    id_col = schema.columns[schema.index("shop_id")]
    if not 1 <= shops <= int(id_col.max):
        raise ValueError(f"shops must be between 1 and {int(id_col.max)}, got {shops}")
    if not 0.0 <= noise <= 0.5:
        raise ValueError(f"noise is a flip probability between 0 and 0.5, got {noise}")


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

    Returns:
        The CSV paths, one per day in date order, whether written now or already there with identical content.
    """
    schema = _schema()
    _check_arguments(shops, noise, schema)
    days = _days(start, end)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = make_shops(seed, shops, schema)
    return [_write_day(day, out, layout, schema, seed=seed, noise=noise, drift_from=drift_from) for day in days]


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
