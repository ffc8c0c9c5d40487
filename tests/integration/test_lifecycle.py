"""The model lifecycle against the real broker, SQLite and trainer processes: versions, the gate, rollback, SavedModel.

Weeks of generated data (20 shops, 3,360 rows a week) are ingested for real and trained by ``python -m include train
--register --mode replay``, one run per week; the gate runs as ``python -m include models evaluate``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import select

from include.history import db
from include.lifecycle.versions import load_holdout
from include.serving.model import LoadedModel
from tests.lifecycle import LifecycleRunner, assert_no_half_state, week_files
from tests.support import PROJECT, process_env

pytestmark = pytest.mark.integration


def models_cli(runner: LifecycleRunner, *args: str) -> tuple[int, str, str]:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "include", "models", *args], env=process_env(runner.env), cwd=PROJECT,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def flipped(tmp_path_factory, kafka_bootstrap) -> LifecycleRunner:
    """Week 1 clean (version 1, champion), week 2 with every label flipped (version 2, candidate), week 3 clean
    (version 3): then the gate."""
    tmp = tmp_path_factory.mktemp("flipped")
    runner = LifecycleRunner(tmp, kafka_bootstrap)
    for week, flip in ((1, False), (2, True), (3, False)):
        runner.ingest(week_files(tmp / "landing", week, flip=flip))
        assert runner.train()["version"] == week
    return runner


def test_a_candidate_trained_on_flipped_labels_is_rejected_and_the_champion_keeps_serving(flipped):
    registry = flipped.registry()
    assert registry.get("default", 2).status == "candidate"  # its own run cannot judge it
    rc, out, err = models_cli(flipped, "evaluate", "--model-name", "default")
    assert rc == 0, err[-3000:]
    [judgement] = json.loads(out)
    assert (judgement["version"], judgement["decision"]) == (2, "reject"), judgement
    rejected = registry.get("default", 2)
    gate = rejected.gate
    assert rejected.status == "rejected" and registry.champion_version("default") == 1
    assert gate["evaluated_on_version"] == 3 and gate["champion_version"] == 1
    assert gate["rows"] == len(load_holdout(registry.get("default", 3))[1]) == 672
    assert gate["candidate_accuracy"] < 0.5 < 0.8 < gate["champion_accuracy"], gate
    assert gate["mcnemar_b"] < gate["mcnemar_c"] and gate["mcnemar_p"] < 1e-6
    with registry.sessions() as s:
        event = s.scalar(select(db.ModelEvent).where(db.ModelEvent.version == 2, db.ModelEvent.action == "rejected"))
        alert = s.scalar(select(db.Alert).where(db.Alert.version == 2))
    assert event.actor == "gate" and f"{gate['candidate_accuracy']:.4f}" in event.reason
    assert f"{gate['champion_accuracy']:.4f}" in event.reason
    assert alert.kind == "candidate_rejected" and f"{gate['candidate_accuracy']:.4f}" in alert.message
    assert f"{gate['champion_accuracy']:.4f}" in alert.message
    # Again: nothing is recorded twice.
    rc, out, _ = models_cli(flipped, "evaluate", "--model-name", "default")
    assert rc == 0 and json.loads(out) == []
    with registry.sessions() as s:
        assert len(s.scalars(select(db.Alert)).all()) == 1
        assert len(s.scalars(select(db.ModelEvent).where(db.ModelEvent.action == "rejected")).all()) == 1
    assert_no_half_state(registry)
    # Why forward: on its own run's held-out rows (flipped too) the candidate would have won.
    own_x, own_y = load_holdout(rejected)
    own = {v: np.mean((LoadedModel(registry.get("default", v).keras_path, v).predict(own_x) > 0.5) == (own_y > 0.5))
           for v in (1, 2)}
    assert own[2] > own[1] + 0.3, own
    rc, out, _ = models_cli(flipped, "list", "--model-name", "default")
    assert rc == 0 and "rejected" in out and "champion" in out


def test_the_saved_model_gives_the_keras_files_predictions(flipped):
    import tensorflow as tf

    info = flipped.registry().get("default", 3)
    x, _ = load_holdout(info)
    keras_p = LoadedModel(info.keras_path, 3).predict(x)
    served = tf.saved_model.load(str(info.saved_model_dir))
    saved_p = served.serve(tf.constant(x)).numpy().reshape(-1)
    np.testing.assert_allclose(saved_p, keras_p, rtol=1e-5, atol=1e-6)
    assert (info.saved_model_dir / "saved_model.pb").is_file() and (info.saved_model_dir / "variables").is_dir()


def test_after_a_drift_the_new_concept_is_promoted_and_rollback_restores_the_old_predictions(tmp_path, kafka_bootstrap):
    runner = LifecycleRunner(tmp_path, kafka_bootstrap)
    for week in (1, 2, 3):
        runner.ingest(week_files(tmp_path / "landing", week, drift_from_week=2))
        runner.train()
    registry = runner.registry()
    x, _ = load_holdout(registry.get("default", 3))
    before = LoadedModel(registry.resolve("default").keras_path, 1).predict(x)
    rc, out, err = models_cli(runner, "evaluate", "--model-name", "default")
    assert rc == 0, err[-3000:]
    [judgement] = json.loads(out)
    gate = judgement["gate"]
    assert judgement["decision"] == "promote", judgement
    # The candidate learned the drifted rule the champion never saw: on the newer rows it is the better model.
    assert gate["candidate_accuracy"] > gate["champion_accuracy"], gate
    assert registry.champion_version("default") == 2 and registry.get("default", 1).status == "retired"
    rc, out, err = models_cli(runner, "rollback", "--model-name", "default", "--reason", "test: back to 1",
                              "--actor", "tester")
    assert rc == 0 and json.loads(out)["champion_version"] == 1, err[-3000:]
    after = LoadedModel(registry.resolve("default").keras_path, 1).predict(x)
    assert np.array_equal(before, after)  # bit for bit
    with registry.sessions() as s:
        pointer = s.get(db.ModelPointer, "default")
        event = s.scalar(select(db.ModelEvent).where(db.ModelEvent.action == "rolled_back"))
    assert (pointer.champion_version, pointer.previous_version, pointer.changed_by) == (1, 2, "tester")
    assert event.actor == "tester" and event.reason == "test: back to 1"
    rc, _, err = models_cli(runner, "promote", "--model-name", "default", "--version", "7", "--reason", "x")
    assert rc == 6 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert_no_half_state(registry)
