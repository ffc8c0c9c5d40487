"""The blog's training loop, literally: per mini-batch ``model.fit`` on its first part, ``model.evaluate`` on the window.

Owns :class:`SeedLoop`, the reference the compiled :class:`include.training.learner.IncrementalLearner` is measured
and checked against (``bench/bench_learner.py``, ``bench/bench_training.py``, the learner's unit tests). Slow by design
(several Keras calls per mini-batch); the trainer never uses it. Never reads Kafka or writes checkpoints.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from include.training.learner_config import BatchMetrics, LearnerConfig, split_sizes


class SeedLoop:
    """The blog's loop: per mini-batch ``model.fit`` on the first part, ``model.evaluate`` on the window.

    Same inputs and :class:`BatchMetrics` as :class:`include.training.learner.IncrementalLearner` (mode is ignored).

    Args:
        model: A compiled Keras model with an ``accuracy`` metric (see :func:`include.training.model.build_model`).
        config: The stream settings.
        shuffle: Passed to ``fit``; the blog used Keras's default (True), which shuffles the 80 rows before batching.
    """

    def __init__(self, model: Any, config: LearnerConfig | None = None, shuffle: bool = True) -> None:
        self.model = model
        self.config = config or LearnerConfig()
        self.shuffle = shuffle
        width = int(model.inputs[0].shape[-1])
        self._win_x = np.zeros((0, width), np.float32)
        self._win_y = np.zeros((0,), np.float32)
        self.batches_seen = 0

    def process(self, x: np.ndarray, y: np.ndarray, sizes: Sequence[int] | None = None) -> list[BatchMetrics]:
        cfg = self.config
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.float32).reshape(-1)
        out = []
        row = 0
        for s in split_sizes(x.shape[0], cfg.batch_messages, sizes):
            xb, yb = x[row:row + s], y[row:row + s]
            row += s
            nt = cfg.train_rows(s)
            pre = float(np.mean((self.model.predict_on_batch(xb)[:, 0] > 0.5) == (yb > 0.5))) if s else math.nan
            loss = tacc = math.nan
            steps = 0
            if nt:
                hist = self.model.fit(xb[:nt], yb[:nt], batch_size=cfg.train_batch_size, epochs=1, verbose=0,
                                      shuffle=self.shuffle)
                loss, tacc = float(hist.history["loss"][-1]), float(hist.history["accuracy"][-1])
                steps = -(-nt // cfg.train_batch_size)
            self._win_x = np.concatenate([self._win_x, xb[nt:]])[-cfg.window_size:]
            self._win_y = np.concatenate([self._win_y, yb[nt:]])[-cfg.window_size:]
            wacc = math.nan
            if len(self._win_y):
                res = self.model.evaluate(self._win_x, self._win_y, verbose=0, return_dict=True)
                wacc = float(res["accuracy"])
            out.append(BatchMetrics(
                index=self.batches_seen, n=s, n_train=nt, n_eval=s - nt, loss=loss, train_accuracy=tacc,
                window_accuracy=wacc, prequential_accuracy=pre, window_size_now=len(self._win_y), steps=steps,
            ))
            self.batches_seen += 1
        return out
