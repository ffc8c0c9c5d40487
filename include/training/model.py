"""The Keras 3 model, with the schema's feature encoding inside it.

The model's input is the raw matrix of :mod:`include.training.decode` (numbers as read, category indices, hour of day and
day of week); its first layer, :class:`SchemaEncoding`, scales and one-hot encodes them. So training, evaluation and
prediction share one encoding, and a saved ``.keras`` file is all a consumer needs: the layer's config carries the
raw layout (ranges, categories), never the schema file. Nothing here trains; see :mod:`include.training.learner`.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

from include.training.decode import RawSlot, raw_layout
from include.schema import CsvSchema

_ONE_HOT_DEPTH = {"hour": 24, "dow": 7}


@keras.saving.register_keras_serializable(package="retrain")
class SchemaEncoding(keras.layers.Layer):
    """Raw slots -> model features: numeric ``(v - min) / (max - min)``, category / hour / day of week one-hot.

    Args:
        layout: The raw layout, ``(name, kind, params)`` per input column (see :func:`include.training.decode.raw_layout`).
    """

    def __init__(self, layout: Sequence[Sequence[Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layout = [[str(name), str(kind), dict(params)] for name, kind, params in layout]
        # Consecutive numeric slots are scaled by one gather and one affine op; each one-hot slot is its own piece.
        self._pieces: list[tuple[str, Any]] = []
        run: list[int] = []
        for k, (_, kind, params) in enumerate(self.layout):
            if kind == "numeric":
                run.append(k)
                continue
            if run:
                self._pieces.append(("numeric", run))
                run = []
            if kind == "category":
                depth = len(params["categories"])
            elif kind in _ONE_HOT_DEPTH:
                depth = _ONE_HOT_DEPTH[kind]
            else:
                raise ValueError(f"unknown raw slot kind {kind!r} for {self.layout[k][0]!r}")
            self._pieces.append(("one_hot", (k, depth)))
        if run:
            self._pieces.append(("numeric", run))
        self._width = sum(len(p) if kind == "numeric" else p[1] for kind, p in self._pieces)

    @property
    def output_width(self) -> int:
        return self._width

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        outs = []
        for kind, piece in self._pieces:
            if kind == "numeric":
                lo = [self.layout[k][2]["min"] for k in piece]
                span = [self.layout[k][2]["max"] - self.layout[k][2]["min"] for k in piece]
                cols = x if piece == list(range(len(self.layout))) else ops.take(x, piece, axis=1)
                outs.append((cols - ops.convert_to_tensor(lo, "float32")) / ops.convert_to_tensor(span, "float32"))
            else:
                k, depth = piece
                # Raw values are whole numbers already checked by the decoder; out of range gives all zeros.
                outs.append(ops.one_hot(ops.cast(x[:, k], "int32"), depth, dtype="float32"))
        return outs[0] if len(outs) == 1 else ops.concatenate(outs, axis=1)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, int]:
        return (input_shape[0], self._width)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["layout"] = self.layout
        return config


def build_model(
    schema: CsvSchema,
    hidden: Sequence[int] = (64, 32),
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> keras.Model:
    """Build and compile the MLP for a schema: SchemaEncoding -> Dense(relu) x len(hidden) -> Dense(1, sigmoid).

    Compiled with Adam and binary cross-entropy (accuracy metric), so ``fit``/``evaluate`` work too; the optimizer
    is built at once so its state exists (and is saved) before the first step.

    Args:
        schema: The declared schema (its raw layout becomes the encoding layer's config).
        hidden: Units of the hidden layers.
        learning_rate: Adam's learning rate.
        seed: Seeds the weight initialisers, so the same seed gives the same initial model.

    Returns:
        The compiled model; its input is the raw matrix of :func:`include.training.decode.decode_batch`.
    """
    layout: list[RawSlot] = raw_layout(schema)
    inputs = keras.Input(shape=(len(layout),), name="raw", dtype="float32")
    h = SchemaEncoding(layout, name="encoding")(inputs)
    for k, units in enumerate(hidden):
        h = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + k),
            name=f"hidden_{k}",
        )(h)
    outputs = keras.layers.Dense(
        1,
        activation="sigmoid",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + len(hidden)),
        name="busy",
    )(h)
    model = keras.Model(inputs, outputs, name=f"retrain_{schema.id.replace('-', '_')}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    model.optimizer.build(model.trainable_variables)
    return model


def configure_tensorflow(intra_op_threads: int | None = None, inter_op_threads: int | None = None) -> None:
    """Set TensorFlow's thread pools (call before any TensorFlow work; later calls are ignored).

    The per-step ops of this small MLP are tiny, so few threads avoid synchronisation cost: by default
    intra-op = the number of CPUs (at most 2 is plenty) and inter-op = 1.
    """
    import os

    import tensorflow as tf

    intra = intra_op_threads if intra_op_threads is not None else min(2, os.cpu_count() or 1)
    inter = inter_op_threads if inter_op_threads is not None else 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # the runtime is already initialised: keep what it has
        pass
