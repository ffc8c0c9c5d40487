"""Concept-drift detectors on the prequential error stream (the blog's part 6): one value per mini-batch.

Every mini-batch is predicted whole before the model trains on it
(:class:`include.training.learner_config.BatchMetrics`'s ``prequential_accuracy``), so ``1 - prequential_accuracy``
is an honest error signal: one value per mini-batch, weighted by its rows. The default detector, :class:`EwmaChart`,
watches that stream for a *sustained rise* of the error, i.e. a drop of accuracy that lasts, not one bad
mini-batch: an exponentially weighted moving average of the error is compared with the median and spread of the
errors over the preceding ~100 mini-batches. Learning from scratch lowers the error, which it never reports.
:class:`PageHinkley` (a cumulative test) is the alternative, kept for comparison: it is as quick on the author's
file but adds up the long same-signed swings of a daily cycle and fires on them (in single-pass mode about once every three
days on generated data without drift).

(ADWIN was tried on the same per-mini-batch streams and left out: with the per-row variance its bound is fooled
by a single bad mini-batch and by the hour-of-day pattern of a good model's errors; with per-mini-batch values
its range term needs 10-40 mini-batches of evidence.)

What the detector cannot tell: the ``single_pass`` mode never learns some of the busy hours, so its error
swings every day and a drift in those hours barely moves it; the chart's reference spread absorbs the swings, and
a drift is found only when it shows above them (on the author's file 500-600 rows after the change; on generated
data with drift usually not at all). ``replay`` mode, which learns the rule, shows a drift plainly.

Owns the detectors, their parameters and their state. Both are pure Python with their whole state in ``to_dict``
(JSON-able), so the trainer stores it in the checkpoint and a resumed run continues the very same statistics.
Never touches a learner (reacting is :mod:`include.training.drift`'s job), never reads Kafka or writes the database.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Sequence

from include.training.learner_config import StopRule

DETECTORS = ("ewma", "page_hinkley")
DEFAULT_DETECTOR = "ewma"


class EwmaChart:
    """EWMA control chart on the per-mini-batch error, against a robust reference of the recent past (the default).

    The smoothed error ``s_t = s_{t-1} + a_t (x_t - s_{t-1})`` fires when it rises above the *upper decile* of the
    reference by more than ``sigmas`` robust standard deviations (interquartile range / 1.349), and above its median
    by at least ``min_rise``; the reference is the last ``reference`` mini-batches' errors *before* the newest
    ``lag`` ones. Why this shape:

    - A learner's error has structure without any drift: it falls from 0.5 or more while the model learns, and on
      data with a daily cycle it rises and falls with the hours (a single-pass model's error can swing by 0.4 every
      day, for a few hours or for half the day). A cumulative test (Page-Hinkley, CUSUM) adds those long
      same-signed swings up and fires on them; a short EWMA only reaches the level of a swing, and a level that
      filled a tenth of the reference is below its upper decile. A median/MAD reference is not enough: with a
      busy plateau in 20-50 % of the reference the median and MAD fall in the quiet mode and the plateau fires.
    - Quantiles ignore the learning curve's first mini-batches and one-off bad batches, which inflate a mean and a
      standard deviation for a long time; the ``lag`` keeps the first drifted mini-batches out of the reference
      they are judged against.
    - ``min_rise`` (error, i.e. accuracy points / 100) keeps a very steady model from raising an alarm on a rise
      too small to matter; ``persist`` keeps one very bad mini-batch from firing on its own.

    Mini-batches are weighted by their rows: a batch of ``w`` rows, when the largest seen had ``W``, moves the EWMA
    with ``a_t = 1 - (1 - alpha) ** (w / W)`` (as ``w / W`` full batches in a row would) and joins the reference only
    if ``w >= W / 2``, so the short last mini-batch of a run cannot fire on its own.

    Args:
        alpha: EWMA weight of a full mini-batch. The default 0.3 reaches 0.66 of a step in 3 mini-batches.
        sigmas: Alarm distance above the reference's upper decile, in robust standard deviations.
        min_rise: Smallest alarm distance above the reference's median, in error units.
        reference: Mini-batches in the reference (one day at 100 shops and 100 rows a mini-batch is 24).
        lag: Newest mini-batches kept out of the reference.
        persist: The newest this many mini-batches (in full ones' worth of rows) must each be above the midpoint
            between the reference's median and the alarm level: one very bad mini-batch lifts the EWMA past the
            alarm on its own, but is no drift.
        min_samples: Warm-up: the chart cannot fire before this many mini-batches (a model's first steps, and the
            first sight of each part of a periodic stream, raise the error without any drift). The default, 50, is
            one default evaluation window's worth (1,000 held-out rows at 20 a mini-batch).
        skip: The first this many mini-batches after a start or a reset never join the reference: a model learning
            from scratch (or again after a drift) errs far more than once it has learnt, and those errors would lift
            the reference's upper decile, so a drift soon after would be found late. With the default, 10, the
            author's file's change (56 mini-batches in) is found 200-300 records after it, not 400-700, and the
            generalisation benchmark's abrupt drift at +300-400 instead of +500-700, with no false alarm on its
            drift-free families nor on ``bench/bench_drift.py``'s streams (20 was as quick but raised 3 on a
            synthetic daily cycle of 48 mini-batches whose first busy hours it kept out).

    Measured by ``bench/bench_drift.py`` (per-mini-batch error streams of real seed- and replay-mode runs on
    generated data with 30-400 shops, label noise 0-20 %, 14-21 days, on the blog author's file, and synthetic
    daily cycles), see ``bench/results/drift.md``.
    """

    name = "ewma"

    def __init__(self, alpha: float = 0.3, sigmas: float = 2.0, min_rise: float = 0.1, reference: int = 100,
                 lag: int = 6, persist: int = 2, min_samples: int = 50, skip: int = 10) -> None:
        if (not 0 < alpha <= 1 or sigmas <= 0 or min_rise < 0 or reference < 3 or lag < 0 or persist < 1
                or min_samples < 1 or skip < 0):
            raise ValueError("alpha must be in (0, 1], sigmas > 0, min_rise >= 0, reference >= 3, lag >= 0, "
                             "persist >= 1, min_samples >= 1 and skip >= 0")
        self.alpha, self.sigmas, self.min_rise = float(alpha), float(sigmas), float(min_rise)
        self.reference, self.lag, self.persist = int(reference), int(lag), int(persist)
        self.min_samples, self.skip = int(min_samples), int(skip)
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.level: float | None = None  # the EWMA
        self.full = 0.0  # the largest mini-batch seen (rows)
        self.recent: deque[float] = deque(maxlen=self.reference + self.lag)  # reference + lag, oldest first
        self.run = 0.0  # newest consecutive mini-batches (in full ones' worth) above the midpoint median-alarm

    def limits(self) -> tuple[float, float] | None:
        """The reference's (median, alarm level), or None while it holds fewer than 3 mini-batches."""
        ref = sorted(list(self.recent)[: max(0, len(self.recent) - self.lag)])
        if len(ref) < 3:
            return None
        q25, median, q75, q90 = (_quantile(ref, q) for q in (0.25, 0.5, 0.75, 0.9))
        return median, self._alarm(median, q75 - q25, q90)

    def _alarm(self, median: float, spread: float, q90: float) -> float:
        """The alarm level of a reference with this median, interquartile range and upper decile (rising with each)."""
        return max(q90 + self.sigmas * spread / 1.349, median + self.min_rise)

    def update(self, x: float, weight: float = 1.0) -> bool:
        """Add one mini-batch's error (``weight`` rows); True when a rise is detected (then call :meth:`reset`)."""
        if not math.isfinite(x) or weight <= 0:
            return False
        self.n += 1
        self.full = max(self.full, float(weight))
        if self.level is None:
            self.level = x
        else:
            self.level += (1.0 - (1.0 - self.alpha) ** (weight / self.full)) * (x - self.level)
        fired = False
        limits = self.limits()
        if limits is not None:
            median, alarm = limits
            self.run = self.run + weight / self.full if x > (median + alarm) / 2 else 0.0
            fired = self.n > self.min_samples and self.run >= self.persist - 1e-9 and self.level > alarm
        if weight >= self.full / 2 and self.n > self.skip:
            self.recent.append(x)
        return fired

    def stop_rule(self, updates: int) -> StopRule:
        """Where the next ``updates`` updates might fire, as a learner's stop rule: the chart as it is (level, run,
        largest mini-batch), with bounds on the midpoint and the alarm level that hold whatever those updates add. A
        caller may train ahead until a mini-batch meets it (see :class:`include.training.learner_config.StopRule`).

        Until update ``t`` at most ``a = t - 1 - lag`` new errors (each within [0, 1]) have joined the reference (the
        newest ``lag`` stay out); the rest of it comes from the values held now, less the oldest ones that left. So
        each of its quantiles is at least the held values' order statistic ``a`` ranks below the quantile's (added
        values only lower order statistics, dropped ones only raise them) and the lower quartile at most the one as
        many ranks above it as values could have been dropped or added: lower bounds on the median, the deciles and
        the spread, hence on the alarm level and the midpoint. Firing needs the error above the midpoint (so the run
        counted against the lower bound is at least the chart's), the run at ``persist`` and the level above the
        alarm level, after ``min_samples`` updates.
        """
        held = sorted(self.recent)
        size = min(self.reference, max(0, len(held) - self.lag))  # the reference's size now; it never shrinks

        def low(q: float, a: int) -> float:  # at most the q quantile of any reference with a new values
            rank = int(q * (size - 1)) - a
            return held[rank] if rank >= 0 else 0.0

        error_above, alarm_above = [], []
        for t in range(1, updates + 1):
            if size < 3:  # no limits yet: the run is not counted, any error may come with one that fires
                midpoint = alarm = -math.inf
            else:
                a = max(0, t - 1 - self.lag)
                # The lower quartile interpolates up to the next rank; values not in the reference: len(held) - size
                # now, plus the a dropped for the new ones.
                q25_rank = int(0.25 * (size - 1)) + 1 + (len(held) - size) + a
                q25 = held[q25_rank] if q25_rank < len(held) else 1.0
                median, q75, q90 = low(0.5, a), low(0.75, a), low(0.9, a)
                alarm = self._alarm(median, max(0.0, q75 - q25), q90)
                midpoint = (median + alarm) / 2
            error_above.append(midpoint)
            alarm_above.append(math.inf if self.n + t <= self.min_samples else alarm)
        return StopRule(accuracy_at_most=[-math.inf] * updates, error_above=error_above, alarm_above=alarm_above,
                        alpha=self.alpha, level=math.nan if self.level is None else self.level, full=self.full,
                        run=self.run, persist=self.persist - 1e-9)

    def change_age(self) -> int:
        """Mini-batches since the estimated start of the change: the run of clearly raised errors (at least 1)."""
        return max(1, round(self.run))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": {"alpha": self.alpha, "sigmas": self.sigmas, "min_rise": self.min_rise,
                                               "reference": self.reference, "lag": self.lag,
                                               "persist": self.persist, "min_samples": self.min_samples,
                                               "skip": self.skip},
                "n": self.n, "level": self.level, "full": self.full, "recent": list(self.recent), "run": self.run}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "EwmaChart":
        det = cls(**raw["params"])
        det.n, det.full, det.run = int(raw["n"]), float(raw["full"]), float(raw["run"])
        det.level = None if raw["level"] is None else float(raw["level"])
        det.recent.extend(float(v) for v in raw["recent"])
        return det


class PageHinkley:
    """Page-Hinkley test for an increase of the mean of a stream (here: per-mini-batch error in [0, 1]).

    Args:
        delta: Rise of the mean tolerated per observation (the drift subtracted from every increment); it keeps
            the statistic from creeping up on noise.
        threshold: How far the cumulative excess must climb above its minimum to fire (``lambda``). With errors
            averaged over 100 rows the default 1.0 needs e.g. three mini-batches 0.35 worse than usual, or a dozen
            0.1 worse. On generated data without drift (replay mode, label noise 0-10 %, 14-28 days) the statistic
            peaked at 0.13-0.68.
        min_samples: Warm-up: for this many observations the statistic only learns the mean and cannot fire. A
            model's first steps, and the first sight of each part of a periodic stream (e.g. the first busy hours
            of the first day), raise the error without any drift. The default, 50 mini-batches, is one default
            evaluation window's worth (1,000 held-out rows at 20 a mini-batch).
    """

    name = "page_hinkley"

    def __init__(self, delta: float = 0.01, threshold: float = 1.0, min_samples: int = 50) -> None:
        if delta < 0 or threshold <= 0 or min_samples < 1:
            raise ValueError("delta must be >= 0, threshold > 0 and min_samples >= 1")
        self.delta, self.threshold, self.min_samples = float(delta), float(threshold), int(min_samples)
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.total = 0.0  # weighted sum of the observations
        self.weight = 0.0
        self.cum = 0.0  # m_T
        self.cum_min = 0.0  # M_T
        self.n_at_min = 0  # observations up to and including the minimum: the change's estimated start

    def update(self, x: float, weight: float = 1.0) -> bool:
        """Add one observation (``weight`` rows behind it); True when a rise is detected (then call :meth:`reset`)."""
        if not math.isfinite(x) or weight <= 0:
            return False
        self.n += 1
        self.total += x * weight
        self.weight += weight
        mean = self.total / self.weight
        self.cum += x - mean - self.delta
        if self.cum < self.cum_min or self.n <= self.min_samples:
            self.cum_min = self.cum
            self.n_at_min = self.n
        return self.n >= self.min_samples and self.cum - self.cum_min > self.threshold

    def stop_rule(self, updates: int) -> StopRule:
        """As :meth:`EwmaChart.stop_rule`. The statistic climbs by at most ``1 - delta`` an update, so an update that
        cannot bring it over the threshold (or comes within the warm-up) cannot fire; any other may fire on any error
        (a cumulative test has no per-update bound), so the rule stops there."""
        gap = self.cum - self.cum_min
        error_above = [-math.inf if self.n + t >= self.min_samples and gap + t * (1.0 - self.delta) > self.threshold
                       else math.inf for t in range(1, updates + 1)]
        return StopRule(accuracy_at_most=[-math.inf] * updates, error_above=error_above,
                        alarm_above=[-math.inf] * updates)

    def change_age(self) -> int:
        """Observations since the estimated start of the change (at least 1 after a detection)."""
        return max(1, self.n - self.n_at_min)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": {"delta": self.delta, "threshold": self.threshold,
                                               "min_samples": self.min_samples},
                "n": self.n, "total": self.total, "weight": self.weight, "cum": self.cum, "cum_min": self.cum_min,
                "n_at_min": self.n_at_min}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "PageHinkley":
        det = cls(**raw["params"])
        det.n, det.total, det.weight = int(raw["n"]), float(raw["total"]), float(raw["weight"])
        det.cum, det.cum_min, det.n_at_min = float(raw["cum"]), float(raw["cum_min"]), int(raw["n_at_min"])
        return det


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, interpolated linearly (numpy's default method)."""
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


Detector = EwmaChart | PageHinkley
_CLASSES: dict[str, type[EwmaChart] | type[PageHinkley]] = {"ewma": EwmaChart, "page_hinkley": PageHinkley}


def make_detector(name: str, **params: Any) -> Detector:
    """A detector by name (one of :data:`DETECTORS`) with its parameters' defaults unless given."""
    if name not in _CLASSES:
        raise ValueError(f"detector must be one of {DETECTORS}, not {name!r}")
    return _CLASSES[name](**params)


def detector_from_dict(raw: dict[str, Any]) -> Detector:
    """A detector restored from its ``to_dict`` output."""
    if raw.get("name") not in _CLASSES:
        raise ValueError(f"unknown detector state {raw.get('name')!r}")
    return _CLASSES[raw["name"]].from_dict(raw)
