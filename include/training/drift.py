"""The drift monitor: feeds the detector mini-batch by mini-batch and applies the configured reaction to the learner.

:class:`DriftMonitor` runs the learner, feeds its prequential error to a detector of
:mod:`include.training.drift_detectors`, turns a detection into a :class:`Detection` (accuracy before and after the
estimated change, rows since it) and applies the configured reaction to the learner: ``shrink`` (the default: keep
only the post-change rows in the replay buffer and raise the learning rate for a while), ``none`` (record only) or
``retrain`` (re-initialise the model's weights and optimizer, keep only the post-change rows and rehearse them). With
a reaction the learner still trains a whole fetch per call; on a detection inside it the learner is put back and
trained again up to the detecting mini-batch, so the reaction takes effect at the very next mini-batch whatever the
chunking. Its state (the detector's included) is JSON-able and travels in the checkpoint.

Never reads Kafka or writes the database: the trainer records the detections as ``drift_events`` rows.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import numpy as np

from include.training.drift_detectors import DETECTORS, detector_from_dict, make_detector
from include.training.learner_config import split_sizes

REACTIONS = ("none", "shrink", "retrain")
_STATE_VERSION = 1


@dataclass(frozen=True)
class DriftConfig:
    """What the trainer does about drift.

    Attributes:
        reaction: ``shrink`` (the default), ``none`` (detect and record only) or ``retrain`` (see the module docstring).
        detector: ``ewma`` (:class:`include.training.drift_detectors.EwmaChart`, the default) or ``page_hinkley``,
            with its default parameters.
        lr_factor: ``shrink``: the learning rate is multiplied by this ...
        lr_batches: ... for this many mini-batches after the detection, then restored.
        min_keep_rows: ``shrink``/``retrain`` keep at least this many of the newest replay rows, so the buffer is
            never cut to a handful of rows when the change is detected early.
        rehearse_batches: ``retrain``: replay passes (``replay_steps`` steps each) on the kept rows right after
            the re-initialisation, before the next mini-batch is predicted.
        history: Recent mini-batches remembered to measure the accuracy after a change; the accuracy before it
            is measured over up to a quarter as many mini-batches just before the change.
    """

    reaction: str = "shrink"
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
            self._restore(state, detector=state["detector"]["name"] == self.config.detector)

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (JSON-able)."""
        return {"version": _STATE_VERSION, "config": self.config.as_dict(), "detector": self.detector.to_dict(),
                "recent": [[a, n] for a, n in self.recent], "boost_left": self.boost_left, "base_lr": self.base_lr,
                "detections": self.detections}

    # -- the stream -------------------------------------------------------------------------------------
    def process(self, learner: Any, x: np.ndarray, y: np.ndarray,
                sizes: Sequence[int] | None = None) -> tuple[list[Any], list[Detection]]:
        """Train ``learner`` on consecutive mini-batches (as :meth:`IncrementalLearner.process`) and watch them.

        Without a reaction the learner gets all mini-batches in one call and the detector reads their metrics
        afterwards. With one, a reaction applies from the mini-batch after the detection on, as if the learner had
        been given one mini-batch per call, at the speed of one call: the learner (weights, optimizer, buffers) and
        this monitor are snapshotted, all mini-batches are trained at once, and if the detector fires on one of them
        both are put back and trained again up to that mini-batch only (the learner gives the same result however
        its calls are cut), the reaction applied, and the rest goes on the same way. While a learning-rate boost
        counts down, mini-batches go one per call.

        Returns:
            The learner's metrics (one per mini-batch) and the detections, in order.
        """
        sizes = split_sizes(len(y), learner.config.batch_messages, sizes)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        metrics: list[Any] = []
        detections: list[Detection] = []

        def train(i: int, j: int) -> list[Any]:  # mini-batches i..j-1
            return learner.process(x[starts[i]:starts[j]], y[starts[i]:starts[j]], sizes[i:j])

        i = 0
        while i < len(sizes):
            if self.boost_left > 0:  # a boost counts down mini-batch by mini-batch
                (m,) = train(i, i + 1)
                metrics.append(m)
                self._count_down(learner)
                self._watch(learner, m, i, detections)
                i += 1
                continue
            if self.config.reaction == "none":
                for k, m in enumerate(train(i, len(sizes))):
                    metrics.append(m)
                    self._watch(learner, m, i + k, detections)
                break
            saved = learner.snapshot(), self._snapshot()
            ms = train(i, len(sizes))
            hit = next((k for k, m in enumerate(ms) if self.observe(m, i + k) is not None), None)
            if hit is None:
                metrics += ms
                break
            # The detector fired after mini-batch i + hit: put both back, train up to it, react, go on after it.
            learner.restore(saved[0])
            self._restore(saved[1])
            for k, m in enumerate(train(i, i + hit + 1)):
                metrics.append(m)
                self._watch(learner, m, i + k, detections)
            i += hit + 1
        return metrics, detections

    def _watch(self, learner: Any, m: Any, index: int, detections: list[Detection]) -> None:
        """Feed one mini-batch's metrics; on a detection, react and record it."""
        det = self.observe(m, index)
        if det is not None:
            self.react(learner, det)
            detections.append(det)

    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.to_dict())

    def _restore(self, state: dict[str, Any], detector: bool = True) -> None:
        """Take :meth:`to_dict`'s state; ``detector=False`` keeps this monitor's own (fresh) detector."""
        if detector:
            self.detector = detector_from_dict(state["detector"])
            self.recent.clear()
            self.recent.extend((float(a), int(n)) for a, n in state["recent"])
        self.boost_left = int(state["boost_left"])
        self.base_lr = None if state["base_lr"] is None else float(state["base_lr"])
        self.detections = int(state["detections"])

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
