"""The drift monitor: feeds the detector mini-batch by mini-batch and applies the configured reaction to the learner.

:class:`DriftMonitor` runs the learner, feeds its prequential error to a detector of
:mod:`include.training.drift_detectors`, turns a detection into a :class:`Detection` (accuracy before and after the
estimated change, rows since it) and applies the configured reaction to the learner: ``shrink`` (the default: keep
only the post-change rows in the replay buffer and raise the learning rate for a while), ``none`` (record only) or
``retrain`` (re-initialise the model's weights and optimizer, keep only the post-change rows and rehearse them). With
a reaction the learner trains up to its ``chunk_batches`` mini-batches per call but stops after any mini-batch on which
an event is possible (the detector says where it might fire), so the reaction takes effect at the very next mini-batch
whatever the chunking, and nothing is trained twice. Its state (the detector's included) is JSON-able and travels in
the checkpoint.

The concept memory (with a reaction): at each detection the model as it was before the change (an *anchor*, set
aside every ``anchor_batches`` mini-batches) is stored, with the accuracy it had; each mini-batch is also predicted
by the stored models, and when one of them was right clearly more often than the live model over the newest
mini-batches and as often as on its own concept, it becomes the live model (a ``recall``, recorded like a drift): a
rule that comes back is taken up again in a couple of mini-batches instead of being relearnt. The stored weights are
the learner's (:meth:`IncrementalLearner.remember`), saved with its state.

Never reads Kafka or writes the database: the trainer records the detections as ``drift_events`` rows.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Sequence

import numpy as np

from include.training.drift_detectors import DEFAULT_DETECTOR, DETECTORS, detector_from_dict, make_detector
from include.training.learner_config import StopRule, split_sizes
from include.training.options import DEFAULT_DRIFT_REACTION, DRIFT_REACTIONS as REACTIONS
_STATE_VERSION = 1
# Added to the accuracies a call stops at: the learner compares in float32, the detector in float64.
_SLACK = 1e-5


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
        memory: Earlier concepts kept (``shrink``/``retrain``; 0: none). At each detection the model as it was just
            before the change is stored; when a stored model predicts the newest mini-batches clearly better than
            the live one, it is recalled (a ``recall`` event): a concept that returns is taken up again at once.
        anchor_batches: The model is set aside every this many mini-batches (the last three are kept), so a
            detection can store the model from before the change, not the one that already saw the new rows.
        recall_batches: Outside a learning-rate boost, a recall compares the stored models with the live one over
            this many newest mini-batches ...
        recall_margin: ... and recalls the best if it was right on this share of their rows more than the live
            one ...
        recall_tolerance: ... and at most this much less often than on its own concept (its accuracy on the
            held-out window's rows from before the change, measured when it was stored): it explains the newest rows
            as well as it explained its own (a stored model that is merely less wrong than a live one still learning
            a new concept is not recalled).
    """

    reaction: str = DEFAULT_DRIFT_REACTION
    detector: str = DEFAULT_DETECTOR
    lr_factor: float = 3.0
    lr_batches: int = 20
    min_keep_rows: int = 400
    rehearse_batches: int = 4
    history: int = 64
    memory: int = 3
    anchor_batches: int = 32
    recall_batches: int = 2
    recall_margin: float = 0.1
    recall_tolerance: float = 0.05

    def __post_init__(self) -> None:
        if self.reaction not in REACTIONS:
            raise ValueError(f"drift reaction must be one of {REACTIONS}, not {self.reaction!r}")
        if self.detector not in DETECTORS:
            raise ValueError(f"drift detector must be one of {DETECTORS}, not {self.detector!r}")
        if self.lr_factor <= 0 or self.lr_batches < 0 or self.min_keep_rows < 0 or self.rehearse_batches < 0:
            raise ValueError("lr_factor must be > 0; lr_batches, min_keep_rows and rehearse_batches >= 0")
        if self.history < 2:
            raise ValueError("history must be at least 2")
        if self.memory < 0 or self.anchor_batches < 1 or self.recall_batches < 1:
            raise ValueError("memory must be >= 0; anchor_batches and recall_batches >= 1")
        if not 0.0 < self.recall_margin <= 1.0 or not 0.0 <= self.recall_tolerance <= 1.0:
            raise ValueError("recall_margin must be within (0, 1], recall_tolerance within [0, 1]")

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
        reaction: What was done: the configured reaction, or ``recall`` (detector ``memory``) when a stored model
            took over; for a recall, ``accuracy_before`` is the live model's and ``accuracy_after`` the recalled
            one's, over the same newest mini-batches.
        memory_slot: The recalled memory entry (a recall only).
    """

    index: int
    detector: str
    batches_since_change: int
    rows_since_change: int
    accuracy_before: float | None
    accuracy_after: float | None
    reaction: str
    memory_slot: int | None = None


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
        # The newest mini-batches' (live accuracy, rows, each memory entry's accuracy), for the recall test.
        self.recall_window: deque[tuple[float, int, list[float]]] = deque(maxlen=self.config.recall_batches)
        if state:
            if int(state.get("version", -1)) != _STATE_VERSION:
                raise ValueError(f"unsupported drift state version {state.get('version')!r}")
            self._restore(state, detector=state["detector"]["name"] == self.config.detector)

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (JSON-able)."""
        return {"version": _STATE_VERSION, "config": self.config.as_dict(), "detector": self.detector.to_dict(),
                "recent": [[a, n] for a, n in self.recent], "boost_left": self.boost_left, "base_lr": self.base_lr,
                "detections": self.detections, "recall_window": [[a, n, list(m)] for a, n, m in self.recall_window]}

    # -- the stream -------------------------------------------------------------------------------------
    def process(self, learner: Any, x: np.ndarray, y: np.ndarray,
                sizes: Sequence[int] | None = None) -> tuple[list[Any], list[Detection]]:
        """Train ``learner`` on consecutive mini-batches (as :meth:`IncrementalLearner.process`) and watch them.

        Without a reaction the learner gets all mini-batches in one call and the detector reads their metrics
        afterwards. With one, a reaction applies from the mini-batch after the detection on, as if the learner had
        been given one mini-batch per call, at the speed of a few calls: the learner trains up to its
        ``chunk_batches`` mini-batches at once (no further than the end of a learning-rate boost), but stops after
        the first one on which the detector or the recall test might fire (:meth:`IncrementalLearner.process_until`
        with :meth:`_stop_rule`), which is then watched, the reaction applied, and the rest goes on the same way;
        nothing is ever trained twice. The model is set aside as an anchor after every ``anchor_batches``-th
        mini-batch of its life, whatever the calls.

        Returns:
            The learner's metrics (one per mini-batch) and the detections, in order.
        """
        cfg = self.config
        sizes = split_sizes(len(y), learner.config.batch_messages, sizes)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        metrics: list[Any] = []
        detections: list[Detection] = []
        memory_on = cfg.reaction != "none" and cfg.memory > 0

        if cfg.reaction == "none":  # nothing is ever undone
            for k, m in enumerate(learner.process(x, y, sizes)):
                metrics.append(m)
                self._watch(learner, m, None, k, detections)
            return metrics, detections
        i = 0
        # The memory entries' scores on mini-batches (from, to), kept until an event changes the memory.
        scored: tuple[int, int, np.ndarray] | None = None
        while i < len(sizes):
            # Calls end at multiples of the learner's chunk in the model's life, and where an anchor is due.
            chunk = learner.config.chunk_batches
            j = min(len(sizes), i + chunk - learner.batches_seen % chunk)
            if memory_on:
                j = min(j, i + cfg.anchor_batches - learner.batches_seen % cfg.anchor_batches)
            if self.boost_left > 0:
                j = min(j, i + self.boost_left)  # the boost ends (the rate goes back) after a call, not inside one
            memory = None
            if memory_on and learner.memory_size() and self.boost_left == 0:  # no recall while a boost runs
                if scored is None or not scored[0] <= i < j <= scored[1]:
                    scored = i, j, learner.memory_accuracy(x[starts[i]:starts[j]], y[starts[i]:starts[j]], sizes[i:j])
                memory = scored[2][:, i - scored[0]:j - scored[0]]
            ms, _ = learner.process_until(x[starts[i]:starts[j]], y[starts[i]:starts[j]],
                                          self._stop_rule(memory, sizes[i:j]), sizes[i:j])
            if memory_on and learner.batches_seen % cfg.anchor_batches == 0:
                learner.take_anchor()
            for k, m in enumerate(ms):
                metrics.append(m)
                self._count_down(learner)
                events = len(detections)
                self._watch(learner, m, None if memory is None else memory[:, k], i + k, detections)
                if len(detections) > events:
                    scored = None  # the memory changed
            i += len(ms)
        return metrics, detections

    def _stop_rule(self, memory: np.ndarray | None, sizes: Sequence[int]) -> StopRule:
        """Where the learner's next call must stop, so that nothing is ever undone: after the first of these
        mini-batches on which an event is possible. The detector says where it might fire; a recall needs a
        mini-batch in the recall window on which a stored model was right on ``recall_margin`` of the rows more than
        the live one (the window's means differ by that much only if one of its mini-batches does): one of these, or
        one already in the window, and then the call stops after its first mini-batch (the next call looks again)."""
        rule = self.detector.stop_rule(len(sizes))
        recall_at = np.full(len(sizes), -np.inf)
        if memory is not None:
            recall_at = np.nan_to_num(memory.max(axis=0), nan=-np.inf) - self.config.recall_margin
            if self._recall_possible_next():
                recall_at[:next((k for k, n in enumerate(sizes) if n > 0), len(sizes) - 1) + 1] = np.inf
        # The learner compares in float32, the detector in float64: a little slack, on the side of stopping.
        return replace(rule, accuracy_at_most=recall_at + _SLACK, error_above=np.asarray(rule.error_above) - _SLACK,
                       alarm_above=np.asarray(rule.alarm_above) - _SLACK, persist=rule.persist - _SLACK)

    def _recall_possible_next(self) -> bool:
        """Whether one of the recall window's mini-batches that stay in it for the next one had a stored model right
        on ``recall_margin`` of the rows more than the live one (then the next mini-batch may bring a recall)."""
        keep = self.config.recall_batches - 1
        staying = list(self.recall_window)[max(0, len(self.recall_window) - keep):] if keep else []
        return any(max(ms) - acc >= self.config.recall_margin - 2 * _SLACK for acc, _, ms in staying if ms)

    def _watch(self, learner: Any, m: Any, memory: np.ndarray | None, index: int, detections: list[Detection]) -> None:
        """Feed one mini-batch's metrics (and the memory entries' accuracies on it); on an event, react, record it."""
        det = self._event(m, memory, learner.memory_quality() if memory is not None else [], index)
        if det is not None:
            self.react(learner, det)
            detections.append(det)

    def _event(self, m: Any, memory: np.ndarray | None, quality: Sequence[float], index: int) -> Detection | None:
        """A recall for this mini-batch, else the detector's detection, or None. A detection becomes a recall when a
        stored model explains the mini-batches since the change; a recall resets the detector."""
        acc = float(m.prequential_accuracy)
        # Not while a boost runs: right after a detection the live model is still learning the new concept, and the
        # rows may for a while be ones the old and the new concept agree on, which a stored model "explains".
        if memory is not None and len(memory) and math.isfinite(acc) and m.n > 0 and self.boost_left == 0:
            self.recall_window.append((acc, int(m.n), [float(v) for v in memory]))
            if len(self.recall_window) >= self.config.recall_batches:
                recall = self._recall(quality, index, None)
                if recall is not None:
                    return recall
        det = self.observe(m, index)
        if det is not None and det.reaction != "none" and self.recall_window:
            return self._recall(quality, index, det) or det
        return det

    def _recall(self, quality: Sequence[float], index: int, det: Detection | None) -> Detection | None:
        """A recall if a memory entry beat the live model by ``recall_margin`` over the recall window (after a
        detection: its mini-batches since the change), within ``recall_tolerance`` of its ``quality``."""
        cfg = self.config
        window = list(self.recall_window)
        if det is not None:
            window = window[len(window) - min(len(window), det.batches_since_change):]
        rows = sum(n for _, n, _ in window)
        live = _weighted([(a, n) for a, n, _ in window])
        stored = [_weighted([(ms[k], n) for _, n, ms in window]) for k in range(len(quality))]
        fits = [k for k in range(len(quality)) if math.isfinite(stored[k]) and stored[k] - live >= cfg.recall_margin
                and stored[k] >= quality[k] - cfg.recall_tolerance]
        if not fits:
            return None
        best = max(fits, key=lambda k: stored[k])
        self.recall_window.clear()
        if det is not None:  # the detector already counted it and started afresh
            return Detection(**{**vars(det), "accuracy_before": live, "accuracy_after": stored[best],
                                "reaction": "recall", "memory_slot": best})
        self.detector.reset()
        self.recent.clear()
        self.detections += 1
        return Detection(index=index, detector="memory", batches_since_change=len(window), rows_since_change=rows,
                         accuracy_before=live, accuracy_after=stored[best], reaction="recall", memory_slot=best)

    def _restore(self, state: dict[str, Any], detector: bool = True) -> None:
        """Take :meth:`to_dict`'s state; ``detector=False`` keeps this monitor's own (fresh) detector."""
        if detector:
            self.detector = detector_from_dict(state["detector"])
            self.recent.clear()
            self.recent.extend((float(a), int(n)) for a, n in state["recent"])
        self.boost_left = int(state["boost_left"])
        self.base_lr = None if state["base_lr"] is None else float(state["base_lr"])
        self.detections = int(state["detections"])
        self.recall_window.clear()
        self.recall_window.extend((float(a), int(n), [float(v) for v in m]) for a, n, m in state.get("recall_window", []))

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
        self.recall_window.clear()  # the memory changes: its entries are other models from here on
        change = learner.batches_seen - det.batches_since_change  # mini-batches the model had seen before the change
        new_rows = learner.config.train_rows(learner.config.batch_messages) * det.batches_since_change
        eval_rows = learner.config.eval_rows(learner.config.batch_messages)
        if det.reaction == "recall":
            learner.recall(det.memory_slot, change, cfg.memory, eval_rows * det.batches_since_change)
            learner.keep_recent_replay(new_rows)
            if self.base_lr is not None:  # a recalled model needs no boost
                learner.set_learning_rate(self.base_lr)
            self.boost_left, self.base_lr = 0, None
            return
        if cfg.memory:
            learner.remember(change, cfg.memory, eval_rows * det.batches_since_change)
        learner.keep_recent_replay(max(cfg.min_keep_rows, new_rows))
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
