"""The Keras model and its in-model feature encoding (include.training.model)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import zipfile  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from include.training.decode import decode_batch, raw_layout, raw_width  # noqa: E402
from include.training.model import SchemaEncoding, build_model  # noqa: E402
from include.schema import load_schema  # noqa: E402


@pytest.fixture(scope="module")
def blog():
    return load_schema("blog_drift")


@pytest.fixture(scope="module")
def drone():
    return load_schema("drone")


def test_numeric_scaling(blog):
    enc = SchemaEncoding(raw_layout(blog))
    lo = [c.min for c in blog.feature_columns]
    hi = [c.max for c in blog.feature_columns]
    mid = [(a + b) / 2 for a, b in zip(lo, hi)]
    width = raw_width(blog)
    assert len(lo) == width  # every blog slot is numeric: one scaled output per raw slot
    out = np.asarray(enc(np.array([lo, hi, mid], dtype=np.float32)))
    np.testing.assert_allclose(out, [[0.0] * width, [1.0] * width, [0.5] * width], atol=1e-6)
    assert enc.output_width == width


def test_one_hot_encoding(drone):
    enc = SchemaEncoding(raw_layout(drone))
    d = decode_batch(drone, [b"2026-01-11T23:00:00Z,5,restaurant,19,0,1"])  # a Sunday
    out = np.asarray(enc(d.x))[0]
    assert out.shape == (24 + 7 + 5 + 2,) == (enc.output_width,)
    hour, dow, cat, num = out[:24], out[24:31], out[31:36], out[36:]
    assert hour.argmax() == 23 and hour.sum() == 1
    assert dow.argmax() == 6 and dow.sum() == 1
    assert cat.argmax() == 2 and cat.sum() == 1
    np.testing.assert_allclose(num, [1.0, 0.0])


def test_encoding_config_round_trip(drone):
    enc = SchemaEncoding(raw_layout(drone), name="encoding")
    config = json.loads(json.dumps(enc.get_config()))
    again = SchemaEncoding.from_config(config)
    x = np.array([[3, 1, 4, 0, 19], [0, 0, 0, 10, 5]], dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(enc(x)), np.asarray(again(x)))


def test_unknown_slot_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown raw slot kind"):
        SchemaEncoding([("x", "embedding", {})])


def test_build_model_shape_and_compile(blog):
    model = build_model(blog)
    assert model.input_shape == (None, raw_width(blog))
    assert model.output_shape == (None, 1)
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [64, 32, 1]
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-3)
    assert model.optimizer.built  # optimizer state exists (and is saved) before the first step
    preds = model.predict(np.zeros((4, raw_width(blog)), np.float32), verbose=0)
    assert ((preds > 0) & (preds < 1)).all()


def test_seed_makes_weights_reproducible(blog):
    a, b, c = build_model(blog, seed=1), build_model(blog, seed=1), build_model(blog, seed=2)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_save_load_round_trip(drone, tmp_path):
    model = build_model(drone, seed=3)
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.integers(0, 24, 64), rng.integers(0, 7, 64), rng.integers(0, 5, 64),
                         rng.integers(0, 20, 64), rng.integers(0, 20, 64)]).astype(np.float32)
    y = rng.integers(0, 2, 64).astype(np.float32)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    # The layout travels in the file: no schema is needed to load it.
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    assert "observed_at.hour" in json.dumps(config)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 2
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # ... and it goes on training the same way.
    model.train_on_batch(x[:32], y[:32])
    loaded.train_on_batch(x[:32], y[:32])
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
