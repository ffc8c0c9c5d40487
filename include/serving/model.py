"""A model version loaded for scoring: its ``.keras`` file, compiled once into one TensorFlow function.

Scoring is :meth:`LoadedModel.predict` on the raw matrix of :mod:`include.serving.requests`. Batches are padded to
the next power of two (at least 8), so a server sees a handful of traced shapes, not one per request size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class LoadedModel:
    """One version, ready to score.

    Args:
        keras_path: The version's ``model.keras``.
        version: Its number (reported with every answer).
    """

    def __init__(self, keras_path: str | Path, version: int, model_name: str | None = None) -> None:
        import keras
        import tensorflow as tf

        import include.training.model  # noqa: F401 - registers SchemaEncoding for loading

        self.version = int(version)
        self.model_name = model_name  # the lineage it belongs to (``default``, ``default.g2``...), when known
        self.model = keras.saving.load_model(str(keras_path), compile=False)
        self.width = int(self.model.inputs[0].shape[-1])
        spec = tf.TensorSpec(shape=(None, self.width), dtype=tf.float32)
        self._fn = tf.function(lambda x: self.model(x, training=False), input_signature=[spec], reduce_retracing=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of the positive label, float64 ``(n,)``, for the raw matrix ``x``."""
        n = int(x.shape[0])
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        padded = max(8, 1 << (n - 1).bit_length())
        if padded != n:
            x = np.concatenate([x, np.zeros((padded - n, x.shape[1]), np.float32)])
        out = self._fn(np.asarray(x, dtype=np.float32)).numpy().reshape(-1)[:n]
        return out.astype(np.float64)

    def warm_up(self) -> None:
        """Trace and run the function once, so the first request it answers is as fast as the rest."""
        self.predict(np.zeros((1, self.width), dtype=np.float32))
