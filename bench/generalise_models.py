"""The models bench_generalise.py runs on every stream: the project's learner as the trainer composes it, and River's
HoeffdingAdaptiveTree and AdaptiveRandomForest fed the same mini-batches, split and window."""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable

import numpy as np


class OurLearner:
    """A new model and its learner and drift monitor, made as the trainer makes them for a new model; reusable.

    The trainer (:class:`include.training.trainer.Trainer`) builds them with
    :func:`include.training.resume.build_model_and_learner` (no checkpoint) and ``resume_drift_monitor`` (empty
    checkpoint metadata), with the default :class:`include.training.options.TrainOptions` and the mode
    ``resolve_mode`` gives a new model. Building and compiling once per (schema, seed) and putting the learner back to
    its fresh state between streams (weights re-initialised by their seeded initialisers, optimizer zeroed, window and
    replay buffer emptied) gives the same result as a new build, without an XLA compile per stream.
    """

    def __init__(self, schema: Any, seed: int) -> None:
        from include.settings import settings_from_env
        from include.training.options import TrainOptions
        from include.training.resume import build_model_and_learner, resolve_mode

        self.settings = settings_from_env({})
        self.options = TrainOptions(seed=seed)
        self.options.mode = resolve_mode(self.options.mode, None)
        self.model, self.learner = build_model_and_learner(schema, self.settings, self.options, None)
        self.fresh = self.learner.get_state()
        self.used = False

    def run(self, x: np.ndarray, y: np.ndarray, week_ends: list[int], memory: int | None = None) -> dict:
        """Train on the stream; window accuracy at each week's end, detections (rows read when each fired) and their
        reactions, records/s, each mini-batch's prequential accuracy and end row. ``memory``: the drift monitor's
        concept memory slots instead of the default (0: none, the learner relearns a returning concept)."""
        from include.training.drift import DriftConfig, DriftMonitor
        from include.training.resume import resume_drift_monitor

        learner = self.learner
        if self.used:
            learner.reset_model()
            learner.set_state(self.fresh)
        self.used = True
        drift = resume_drift_monitor(self.options, {}, learner)
        if memory is not None:
            drift = DriftMonitor(DriftConfig(**{**drift.config.as_dict(), "memory": memory}))
        chunk = self.settings.batch_messages * self.options.chunk_batches  # what ReadTrainLoop hands over at a time
        metrics, detections, reactions = [], [], []
        started = time.perf_counter()
        for start in range(0, len(y), chunk):
            m, dets = drift.process(learner, x[start:start + chunk], y[start:start + chunk])
            ends = start + np.cumsum([b.n for b in m])
            detections += [int(ends[d.index]) for d in dets]
            reactions += [d.reaction for d in dets]
            metrics += m
        seconds = time.perf_counter() - started
        ends = np.cumsum([b.n for b in metrics])
        return {"windows": [_at(ends, [b.window_accuracy for b in metrics], e) for e in week_ends],
                "detections": detections, "reactions": reactions, "rps": len(y) / seconds, "seconds": seconds,
                "prequential": [b.prequential_accuracy for b in metrics], "ends": [int(e) for e in ends]}


def _at(ends: np.ndarray, values: list[float], row: int) -> float:
    """The value of the last mini-batch ending at or before ``row``."""
    i = int(np.searchsorted(ends, row, side="right")) - 1
    return float(values[max(i, 0)])


def river_models() -> dict[str, Callable[[int], Any]]:
    """River's models by name (seeded), or none if River is not installed."""
    try:
        from river import forest, tree
    except ImportError:
        return {}
    return {"HAT": lambda seed: tree.HoeffdingAdaptiveTreeClassifier(seed=seed),
            "ARF": lambda seed: forest.ARFClassifier(seed=seed)}


def river_version() -> str | None:
    try:
        import river
    except ImportError:
        return None
    return river.__version__


def river_run(model: Any, rows: list[dict], labels: list[int], week_ends: list[int], batch_messages: int = 100,
              window: int = 1000) -> dict:
    """Prequential, as the learner: per mini-batch, the first 80 % are learnt one by one, the rest join a window of
    the latest ``window`` held-out rows; the window's accuracy is measured at the end of the last mini-batch of
    each week (the same mini-batch the learner's figure is read at). Records/s: learning and those measurements."""
    from include.training.learner_config import LearnerConfig, split_sizes

    cfg = LearnerConfig(batch_messages=batch_messages, window_size=window)
    win: deque = deque(maxlen=window)
    sizes = split_sizes(len(labels), batch_messages)
    ends = np.cumsum(sizes)
    measure_at = {int(ends[max(int(np.searchsorted(ends, e, side="right")) - 1, 0)]) for e in week_ends}
    windows: dict[int, float] = {}
    started, row = time.perf_counter(), 0
    for size in sizes:
        nt = cfg.train_rows(size)
        for x, y in zip(rows[row:row + nt], labels[row:row + nt]):
            model.learn_one(x, y)
        win.extend(zip(rows[row + nt:row + size], labels[row + nt:row + size]))
        row += size
        if row in measure_at:
            windows[row] = sum(int(model.predict_one(x) == y) for x, y in win) / len(win)
    seconds = time.perf_counter() - started
    return {"windows": [windows[int(ends[max(int(np.searchsorted(ends, e, side="right")) - 1, 0)])] for e in week_ends],
            "rps": len(labels) / seconds}
