"""The compiled incremental learner (include.training.learner) and the reference loop (include.training.seed_loop)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import math  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from include.training.decode import raw_layout, raw_width  # noqa: E402
from include.training.learner import IncrementalLearner  # noqa: E402
from include.training.learner_config import LearnerConfig, split_sizes  # noqa: E402
from include.training.seed_loop import SeedLoop  # noqa: E402
from include.training.model import build_model  # noqa: E402
from include.schema import load_schema  # noqa: E402


@pytest.fixture(scope="module")
def schema():
    return load_schema("blog_drift")


def make_rows(schema, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw rows within the schema's ranges, labelled by a simple rule so that training does something."""
    rng = np.random.default_rng(seed)
    layout = raw_layout(schema)
    assert all(kind == "numeric" for _, kind, _ in layout)
    x = np.column_stack([rng.integers(int(p["min"]), int(p["max"]) + 1, n) for _, _, p in layout]).astype(np.float32)
    names = [name for name, _, _ in layout]
    y = ((x[:, names.index("c2_x")] + x[:, names.index("c3_y")]) < 20).astype(np.float32)
    return x, y


def weights_of(model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


def test_config_split():
    cfg = LearnerConfig()
    assert (cfg.train_rows(100), cfg.eval_rows(100)) == (80, 20)
    assert (cfg.train_rows(37), cfg.eval_rows(37)) == (29, 8)
    assert LearnerConfig(train_fraction=0.29).train_rows(100) == 29  # no float round-down
    assert LearnerConfig.from_dict(cfg.as_dict()) == cfg


@pytest.mark.parametrize(
    "changes",
    [{"mode": "online"}, {"window_size": 10}, {"train_fraction": 1.5}, {"mode": "replay", "replay_buffer": 50},
     {"replay_steps": -1}, {"batch_messages": 0}],
)
def test_config_rejects(changes):
    with pytest.raises(ValueError):
        LearnerConfig(**changes)


def test_split_sizes():
    assert split_sizes(250, 100) == [100, 100, 50]
    assert split_sizes(200, 100) == [100, 100]
    assert split_sizes(0, 100) == []
    assert split_sizes(10, 100, [3, 0, 7]) == [3, 0, 7]
    with pytest.raises(ValueError):
        split_sizes(10, 100, [3, 3])
    with pytest.raises(ValueError):
        split_sizes(101, 100, [101])


@pytest.mark.parametrize("jit", [True, False])
def test_weights_match_plain_keras_steps(schema, jit):
    """The compiled loop does exactly the steps ``fit`` would: chunks of 32, 32, 16 in order, the model's Adam."""
    x, y = make_rows(schema, 730)  # 7 full mini-batches and a partial one of 30 (24 trained: one step of 24)
    fast = build_model(schema, seed=5)
    metrics = IncrementalLearner(fast, LearnerConfig(jit_compile=jit, chunk_batches=4)).process(x, y)
    assert [m.steps for m in metrics] == [3] * 7 + [1]

    ref = build_model(schema, seed=5)
    losses = []
    for start in range(0, 730, 100):
        xb, yb = x[start:start + 100], y[start:start + 100]
        nt = math.floor(0.8 * len(xb))
        row_losses = []
        for s in range(0, nt, 32):
            rows = slice(s, min(s + 32, nt))
            # each row's loss at the weights of its own step, as fit reports it
            row_losses.append(np.asarray(keras.losses.binary_crossentropy(yb[rows, None], ref(xb[rows]))))
            ref.train_on_batch(xb[rows], yb[rows])
        losses.append(np.concatenate(row_losses).mean())
    assert int(fast.optimizer.iterations.numpy()) == int(ref.optimizer.iterations.numpy()) == 22
    for a, b in zip(weights_of(fast), weights_of(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([m.loss for m in metrics], losses, rtol=1e-5)


def test_curves_match_seed_loop(schema):
    x, y = make_rows(schema, 1200, seed=1)
    cfg = LearnerConfig(window_size=100)
    fast = IncrementalLearner(build_model(schema, seed=2), cfg).process(x, y)
    slow = SeedLoop(build_model(schema, seed=2), cfg, shuffle=False).process(x, y)
    for f, s in zip(fast, slow):
        assert (f.index, f.n, f.n_train, f.n_eval, f.window_size_now, f.steps) == (
            s.index, s.n, s.n_train, s.n_eval, s.window_size_now, s.steps)
        assert f.window_accuracy == pytest.approx(s.window_accuracy, abs=0.011)  # at most one row may flip
        assert f.prequential_accuracy == pytest.approx(s.prequential_accuracy, abs=0.011)
        assert f.loss == pytest.approx(s.loss, rel=1e-4)
        assert f.train_accuracy == pytest.approx(s.train_accuracy, abs=0.013)


def test_window_keeps_latest_rows(schema):
    cfg = LearnerConfig(batch_messages=20, window_size=50, chunk_batches=8)  # 16 trained, 4 held out per batch
    x, y = make_rows(schema, 20 * 30 + 7, seed=2)
    learner = IncrementalLearner(build_model(schema), cfg)
    metrics = learner.process(x[:250], y[:250]) + learner.process(x[250:], y[250:])
    assert [m.window_size_now for m in metrics][:14] == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 50, 50]
    # Each call's last mini-batch is partial: 10 rows (8 + 2), then 17 rows (13 + 4).
    assert [(m.n, m.n_eval) for m in metrics if m.n != 20] == [(10, 2), (17, 4)]
    held, start = [], 0
    for m in metrics:
        held.extend(range(start + m.n_train, start + m.n))
        start += m.n
    held = np.array(held)
    wx, wy = learner.window()
    np.testing.assert_array_equal(wx, x[held[-50:]])
    np.testing.assert_array_equal(wy, y[held[-50:]])


def test_prequential_is_measured_before_training(schema):
    x, y = make_rows(schema, 300, seed=3)
    model = build_model(schema)
    learner = IncrementalLearner(model, LearnerConfig())
    for b in range(3):
        xb, yb = x[b * 100:(b + 1) * 100], y[b * 100:(b + 1) * 100]
        expected = np.mean((model.predict(xb, verbose=0)[:, 0] > 0.5) == (yb > 0.5))
        (m,) = learner.process(xb, yb)
        assert m.prequential_accuracy == pytest.approx(expected, abs=1e-6)
        assert m.index == b
    # After training, the window accuracy is the model's accuracy on the window.
    wx, wy = learner.window()
    assert m.window_accuracy == pytest.approx(np.mean((model.predict(wx, verbose=0)[:, 0] > 0.5) == wy), abs=1e-6)


def test_custom_sizes_and_empty_batches(schema):
    x, y = make_rows(schema, 150, seed=4)
    learner = IncrementalLearner(build_model(schema), LearnerConfig())
    metrics = learner.process(x, y, sizes=[98, 0, 52])
    assert [(m.n, m.n_train, m.n_eval, m.steps) for m in metrics] == [(98, 78, 20, 3), (0, 0, 0, 0), (52, 41, 11, 2)]
    empty = metrics[1]
    assert math.isnan(empty.loss) and math.isnan(empty.prequential_accuracy)
    assert empty.window_accuracy == pytest.approx(metrics[0].window_accuracy)  # nothing changed
    assert learner.rows_seen == 150 and learner.batches_seen == 3


def test_replay_buffer_is_bounded(schema):
    cfg = LearnerConfig(batch_messages=20, window_size=40, mode="replay", replay_buffer=50, replay_steps=5)
    x, y = make_rows(schema, 200, seed=5)
    learner = IncrementalLearner(build_model(schema), cfg)
    metrics = learner.process(x, y)
    assert [m.steps for m in metrics] == [1 + 5] * 10
    rx, ry = learner.replay_rows()
    assert rx.shape == (50, raw_width(schema))
    trained = np.concatenate([np.arange(s, s + 16) for s in range(0, 200, 20)])
    np.testing.assert_array_equal(rx, x[trained[-50:]])
    np.testing.assert_array_equal(ry, y[trained[-50:]])
    state = learner.get_state()
    assert state["replay_x"].shape == (50, raw_width(schema)) and state["rng_counter"] == 50


def test_replay_only_mode(schema):
    cfg = LearnerConfig(batch_messages=20, window_size=40, mode="replay", replay_buffer=40, replay_steps=2,
                        replay_plain_pass=False)
    x, y = make_rows(schema, 60, seed=6)
    model = build_model(schema)
    metrics = IncrementalLearner(model, cfg).process(x, y)
    assert [m.steps for m in metrics] == [2, 2, 2]
    assert int(model.optimizer.iterations.numpy()) == 6


@pytest.mark.parametrize("mode", ["single_pass", "replay"])
def test_resume_equals_uninterrupted(schema, mode, tmp_path):
    cfg = LearnerConfig(mode=mode, replay_buffer=300, replay_steps=4, window_size=100, chunk_batches=4, seed=11)
    x, y = make_rows(schema, 1000, seed=7)

    straight = build_model(schema, seed=9)
    m_straight = IncrementalLearner(straight, cfg).process(x, y)

    first = build_model(schema, seed=9)
    learner = IncrementalLearner(first, cfg)
    m_first = learner.process(x[:300], y[:300]) + learner.process(x[300:400], y[300:400])
    first.save(tmp_path / "model.keras")
    state = learner.get_state()

    resumed = keras.saving.load_model(tmp_path / "model.keras")
    learner2 = IncrementalLearner(resumed, cfg)
    learner2.set_state(state)
    m_rest = learner2.process(x[400:], y[400:])

    assert m_first + m_rest == m_straight  # every metric, bit for bit
    for a, b in zip(weights_of(straight), weights_of(resumed)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(straight.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert learner2.get_state()["rng_counter"] == (40 if mode == "replay" else 0)


def test_set_state_rejects_other_shapes(schema):
    learner = IncrementalLearner(build_model(schema), LearnerConfig(window_size=100))
    state = learner.get_state()
    other = IncrementalLearner(build_model(schema), LearnerConfig(window_size=200))
    with pytest.raises(ValueError, match="window_x"):
        other.set_state(state)


def test_process_rejects_bad_shapes(schema):
    learner = IncrementalLearner(build_model(schema), LearnerConfig())
    width = raw_width(schema)
    for wrong in (width - 1, width + 1):
        with pytest.raises(ValueError):
            learner.process(np.zeros((10, wrong), np.float32), np.zeros(10, np.float32))
    with pytest.raises(ValueError):
        learner.process(np.zeros((10, width), np.float32), np.zeros(9, np.float32))
    with pytest.raises(ValueError):
        learner.process(np.zeros(10 * width, np.float32), np.zeros(10, np.float32))
    assert learner.rows_seen == 0 and learner.batches_seen == 0
    learner.process(np.zeros((10, width), np.float32), np.zeros(10, np.float32))  # the right shapes are taken
    assert learner.rows_seen == 10


def test_replay_learns(schema):
    """Replay mode fits the rule well where a single pass barely starts to."""
    x, y = make_rows(schema, 3000, seed=8)
    cfg = dict(window_size=200, chunk_batches=32)
    seed_m = IncrementalLearner(build_model(schema), LearnerConfig(**cfg)).process(x, y)
    replay_m = IncrementalLearner(build_model(schema), LearnerConfig(mode="replay", **cfg)).process(x, y)
    assert replay_m[-1].window_accuracy >= 0.95
    assert replay_m[-1].window_accuracy > seed_m[-1].window_accuracy


def test_mode_names_and_the_default_for_a_new_model():
    """The blog's loop is ``single_pass`` (``seed`` before, still read from old checkpoints); a new model learns."""
    from types import SimpleNamespace

    from include.training.learner_config import DEFAULT_MODE
    from include.training.resume import resolve_mode

    assert LearnerConfig(mode="seed").mode == "single_pass"
    assert LearnerConfig.from_dict({"mode": "seed"}) == LearnerConfig(mode="single_pass")
    with pytest.raises(ValueError, match="mode must be one of"):
        LearnerConfig(mode="online")
    assert DEFAULT_MODE == "replay"
    assert resolve_mode(None, None) == "replay"
    old = SimpleNamespace(learner_state={"config": {"mode": "seed"}})
    assert resolve_mode(None, old) == "single_pass"  # a model keeps its mode
    assert resolve_mode("seed", None) == "single_pass"
    assert resolve_mode("replay", old) == "replay"  # asked for: build_model_and_learner refuses the mismatch


@pytest.mark.parametrize("mode", ["single_pass", "replay"])
def test_compiling_up_front_changes_nothing(schema, mode):
    """``compile()`` runs the chunk on no mini-batch: the weights, optimizer, window, buffer and draws stay as they were."""
    cfg = LearnerConfig(mode=mode, replay_buffer=300, replay_steps=4, window_size=100, chunk_batches=4, seed=3)
    x, y = make_rows(schema, 700, seed=5)
    runs = []
    for warm in (False, True):
        model = build_model(schema, seed=4)
        learner = IncrementalLearner(model, cfg)
        if warm:
            before = learner.get_state()
            learner.compile()
            assert before.keys() == learner.get_state().keys()
            for key, value in learner.get_state().items():
                np.testing.assert_array_equal(np.asarray(before[key]), np.asarray(value))
        runs.append((learner.process(x, y), weights_of(model)))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


def test_replay_steps_two_per_loop_iteration_are_the_same_steps(schema):
    """The replay loop runs two steps per iteration (an even replay_steps): bit for bit what one per iteration does."""
    cfg = LearnerConfig(mode="replay", replay_buffer=300, replay_steps=6, window_size=100, chunk_batches=4, seed=5)
    assert IncrementalLearner(build_model(schema), cfg)._replay_unroll == 2
    assert IncrementalLearner(build_model(schema), LearnerConfig(mode="replay", replay_steps=5))._replay_unroll == 1
    x, y = make_rows(schema, 900, seed=2)
    results = []
    for unroll in (1, 2):
        model = build_model(schema, seed=6)
        learner = IncrementalLearner(model, cfg)
        learner._replay_unroll = unroll  # read when the chunk is traced, at the first call
        results.append((learner.process(x, y), weights_of(model), learner.get_state()["rng_counter"]))
    (m1, w1, c1), (m2, w2, c2) = results
    assert m1 == m2 and c1 == c2 == 54
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
