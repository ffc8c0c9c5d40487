"""Concept-drift detection on the prequential error stream, and the trainer's reaction to it (the blog's part 6).

Every mini-batch is predicted whole before the model trains on it (:class:`include.learner.BatchMetrics`'s
``prequential_accuracy``), so ``1 - prequential_accuracy`` is an honest error signal: one value per mini-batch,
weighted by its rows. The default detector, :class:`EwmaChart`, watches that stream for a *sustained rise* of the
error, i.e. a drop of accuracy that lasts, not one bad mini-batch: an exponentially weighted moving average of the
error is compared with the median and spread of the errors over the preceding ~100 mini-batches. Learning from
scratch lowers the error, which it never reports. :class:`PageHinkley` (a cumulative test) is the alternative,
kept for comparison: it is as quick on the author's file but adds up the long same-signed swings of a daily cycle
and fires on them (in seed mode about once every three days on generated data without drift). Both are pure Python
with their whole state in ``to_dict`` (JSON-able), so the trainer stores it in the checkpoint and a resumed run
continues the very same statistics.

(ADWIN was tried on the same per-mini-batch streams and left out: with the per-row variance its bound is fooled
by a single bad mini-batch and by the hour-of-day pattern of a good model's errors; with per-mini-batch values
its range term needs 10-40 mini-batches of evidence.)

What the detector cannot tell: the single-pass ``seed`` mode never learns some of the busy hours, so its error
swings every day and a drift in those hours barely moves it; the chart's reference spread absorbs the swings, and
a drift is found only when it shows above them (on the author's file 500-600 rows after the change; on generated
data with drift usually not at all). ``replay`` mode, which learns the rule, shows a drift plainly.

:class:`DriftMonitor` feeds the detector mini-batch by mini-batch, turns a detection into a :class:`Detection`
(accuracy before and after the estimated change, rows since it) and applies the configured reaction to the
learner: ``none`` (record only), ``shrink`` (keep only the post-change rows in the replay buffer and raise the
learning rate for a while) or ``retrain`` (re-initialise the model's weights and optimizer, keep only the
post-change rows and rehearse them). With a reaction it runs the learner one mini-batch at a time, so the
reaction takes effect at the very next mini-batch whatever the chunking. This module never reads Kafka or writes
the database; the trainer records the detections as ``drift_events`` rows.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import numpy as np

DETECTORS = ("ewma", "page_hinkley")
REACTIONS = ("none", "shrink", "retrain")
_STATE_VERSION = 1


# ---------------------------------------------------------------------------------------------------------
# Detectors


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

    Measured by ``bench/bench_drift.py`` (per-mini-batch error streams of real seed- and replay-mode runs on
    generated data with 30-400 shops, label noise 0-20 %, 14-21 days, on the blog author's file, and synthetic
    daily cycles), see ``bench/results/drift.md``.
    """

    name = "ewma"

    def __init__(self, alpha: float = 0.3, sigmas: float = 2.0, min_rise: float = 0.1, reference: int = 100,
                 lag: int = 6, persist: int = 2, min_samples: int = 50) -> None:
        if (not 0 < alpha <= 1 or sigmas <= 0 or min_rise < 0 or reference < 3 or lag < 0 or persist < 1
                or min_samples < 1):
            raise ValueError("alpha must be in (0, 1], sigmas > 0, min_rise >= 0, reference >= 3, lag >= 0, "
                             "persist >= 1 and min_samples >= 1")
        self.alpha, self.sigmas, self.min_rise = float(alpha), float(sigmas), float(min_rise)
        self.reference, self.lag, self.persist = int(reference), int(lag), int(persist)
        self.min_samples = int(min_samples)
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
        return median, max(q90 + self.sigmas * (q75 - q25) / 1.349, median + self.min_rise)

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
        if weight >= self.full / 2:
            self.recent.append(x)
        return fired

    def change_age(self) -> int:
        """Mini-batches since the estimated start of the change: the run of clearly raised errors (at least 1)."""
        return max(1, round(self.run))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": {"alpha": self.alpha, "sigmas": self.sigmas, "min_rise": self.min_rise,
                                               "reference": self.reference, "lag": self.lag,
                                               "persist": self.persist, "min_samples": self.min_samples},
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
    if raw.get("name") not in _CLASSES:
        raise ValueError(f"unknown detector state {raw.get('name')!r}")
    return _CLASSES[raw["name"]].from_dict(raw)


# ---------------------------------------------------------------------------------------------------------
# The monitor: detector + reaction


@dataclass(frozen=True)
class DriftConfig:
    """What the trainer does about drift.

    Attributes:
        reaction: ``none`` (detect and record only), ``shrink`` or ``retrain`` (see the module docstring).
        detector: ``ewma`` (:class:`EwmaChart`, the default) or ``page_hinkley``, with its default parameters.
        lr_factor: ``shrink``: the learning rate is multiplied by this ...
        lr_batches: ... for this many mini-batches after the detection, then restored.
        min_keep_rows: ``shrink``/``retrain`` keep at least this many of the newest replay rows, so the buffer is
            never cut to a handful of rows when the change is detected early.
        rehearse_batches: ``retrain``: replay passes (``replay_steps`` steps each) on the kept rows right after
            the re-initialisation, before the next mini-batch is predicted.
        history: Recent mini-batches remembered to measure the accuracy after a change; the accuracy before it
            is measured over up to a quarter as many mini-batches just before the change.
    """

    reaction: str = "none"
    detector: str = "ewma"
    lr_factor: float = 3.0
    lr_batches: int = 20
    min_keep_rows: int = 400
    rehearse_batches: int = 4
    history: int = 64

    def __post_init__(self) -> None:
        if self.reaction not in REACTIONS:
            raise ValueError(f"drift reaction must be one of {REACTIONS}, not {self.reaction!r}")
        if self.detector not in DETECTORS:
            raise ValueError(f"drift detector must be one of {DETECTORS}, not {self.detector!r}")
        if self.lr_factor <= 0 or self.lr_batches < 0 or self.min_keep_rows < 0 or self.rehearse_batches < 0:
            raise ValueError("lr_factor must be > 0; lr_batches, min_keep_rows and rehearse_batches >= 0")
        if self.history < 2:
            raise ValueError("history must be at least 2")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "DriftConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class Detection:
    """A detected drift, at the end of the mini-batch ``index`` of a :meth:`DriftMonitor.process` call.

    Attributes:
        index: The mini-batch (position in the call's ``sizes``) whose metrics fired the detector.
        detector: The detector's name.
        batches_since_change: Mini-batches from the estimated start of the change to the detection, inclusive.
        rows_since_change: Their rows.
        accuracy_before: Prequential accuracy over up to ``history`` mini-batches before the change (row-weighted).
        accuracy_after: Prequential accuracy from the change to the detection.
        reaction: What was done.
    """

    index: int
    detector: str
    batches_since_change: int
    rows_since_change: int
    accuracy_before: float | None
    accuracy_after: float | None
    reaction: str


class DriftMonitor:
    """Runs the learner, feeds its prequential error to the detector, and reacts (see the module docstring).

    Args:
        config: What to detect with and how to react.
        state: :meth:`to_dict`'s output from a checkpoint, to continue exactly; None starts afresh. A state saved
            with another detector is ignored (a fresh detector starts).
    """

    def __init__(self, config: DriftConfig | None = None, state: dict[str, Any] | None = None) -> None:
        self.config = config or DriftConfig()
        self.detector = make_detector(self.config.detector)
        self.recent: deque[tuple[float, int]] = deque(maxlen=self.config.history)  # (accuracy, rows) per batch
        self.boost_left = 0
        self.base_lr: float | None = None
        self.detections = 0
        if state:
            if int(state.get("version", -1)) != _STATE_VERSION:
                raise ValueError(f"unsupported drift state version {state.get('version')!r}")
            if state["detector"]["name"] == self.config.detector:
                self.detector = detector_from_dict(state["detector"])
                self.recent.extend((float(a), int(n)) for a, n in state["recent"])
            self.boost_left = int(state["boost_left"])
            self.base_lr = None if state["base_lr"] is None else float(state["base_lr"])
            self.detections = int(state["detections"])

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (JSON-able)."""
        return {"version": _STATE_VERSION, "config": self.config.as_dict(), "detector": self.detector.to_dict(),
                "recent": [[a, n] for a, n in self.recent], "boost_left": self.boost_left, "base_lr": self.base_lr,
                "detections": self.detections}

    # -- the stream -------------------------------------------------------------------------------------
    def process(self, learner: Any, x: np.ndarray, y: np.ndarray,
                sizes: Sequence[int] | None = None) -> tuple[list[Any], list[Detection]]:
        """Train ``learner`` on consecutive mini-batches (as :meth:`IncrementalLearner.process`) and watch them.

        Without a reaction the learner gets all mini-batches in one call (its speed is untouched) and the detector
        reads their metrics afterwards; with one, the learner gets one mini-batch per call, so a reaction applies
        from the next mini-batch on.

        Returns:
            The learner's metrics (one per mini-batch) and the detections, in order.
        """
        from include.training.learner_config import split_sizes

        sizes = split_sizes(len(y), learner.config.batch_messages, sizes)
        detections: list[Detection] = []
        if self.config.reaction == "none":
            metrics = learner.process(x, y, sizes)
            for i, m in enumerate(metrics):
                det = self.observe(m, i)
                if det is not None:
                    detections.append(det)
            return metrics, detections
        metrics = []
        row = 0
        for i, s in enumerate(sizes):
            (m,) = learner.process(x[row:row + s], y[row:row + s], [s])
            row += s
            metrics.append(m)
            self._count_down(learner)
            det = self.observe(m, i)
            if det is not None:
                self.react(learner, det)
                detections.append(det)
        return metrics, detections

    def observe(self, m: Any, index: int = 0) -> Detection | None:
        """Feed one mini-batch's metrics; a :class:`Detection` if the detector fired (it is then reset)."""
        acc = float(m.prequential_accuracy)
        if not math.isfinite(acc) or m.n <= 0:
            return None
        self.recent.append((acc, int(m.n)))
        if not self.detector.update(1.0 - acc, float(m.n)):
            return None
        age = min(self.detector.change_age(), len(self.recent))
        recent = list(self.recent)
        after, before = recent[len(recent) - age:], recent[:len(recent) - age][-max(1, self.config.history // 4):]
        self.detector.reset()
        self.recent.clear()
        self.recent.extend(after)
        self.detections += 1
        return Detection(index=index, detector=self.detector.name, batches_since_change=age,
                         rows_since_change=sum(n for _, n in after), accuracy_before=_weighted(before),
                         accuracy_after=_weighted(after), reaction=self.config.reaction)

    # -- reactions --------------------------------------------------------------------------------------
    def react(self, learner: Any, det: Detection) -> None:
        """Apply the configured reaction to ``learner`` after detection ``det``."""
        cfg = self.config
        if cfg.reaction == "none":
            return
        keep = max(cfg.min_keep_rows, learner.config.train_rows(learner.config.batch_messages) * det.batches_since_change)
        learner.keep_recent_replay(keep)
        if cfg.reaction == "shrink":
            if self.base_lr is None:
                self.base_lr = learner.learning_rate()
            learner.set_learning_rate(self.base_lr * cfg.lr_factor)
            self.boost_left = cfg.lr_batches
        elif cfg.reaction == "retrain":
            learner.reset_model()
            learner.rehearse(cfg.rehearse_batches)

    def attach(self, learner: Any) -> None:
        """After a resume: re-apply a learning-rate boost still in force (the learner's config may have reset it)."""
        if self.boost_left > 0 and self.base_lr is not None:
            learner.set_learning_rate(self.base_lr * self.config.lr_factor)

    def _count_down(self, learner: Any) -> None:
        if self.boost_left > 0:
            self.boost_left -= 1
            if self.boost_left == 0 and self.base_lr is not None:
                learner.set_learning_rate(self.base_lr)
                self.base_lr = None


def _weighted(pairs: Sequence[tuple[float, int]]) -> float | None:
    rows = sum(n for _, n in pairs)
    return sum(a * n for a, n in pairs) / rows if rows else None
