"""Replay mode, drift detection and the batch baseline on the blog author's file, through the real broker.

The file's week 2 (line 5,601 on) follows other rules; line 5,601 itself is malformed and quarantined at ingest,
so in the topic week 1 is offsets 0-5,599 and week 2 starts at offset 5,600.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import select

from include.history import db
from include.settings import settings_from_env
from tests.support import BLOG_FILE, BLOG_ROWS, Runner, ingest_blog_file, unique

pytestmark = pytest.mark.integration

WEEK2 = 5_600  # first offset of week 2
ROWS = BLOG_ROWS


@pytest.fixture(scope="module")
def blog_topic(kafka_bootstrap, tmp_path_factory) -> str:
    return ingest_blog_file(kafka_bootstrap, tmp_path_factory.mktemp("ingest-state"), "blog-drift")


def window_accuracy_at(batches, offset_to: int) -> float:
    (row,) = [b for b in batches if b.offsets_to["0"] == offset_to]
    return row.window_accuracy


def test_replay_mode_learns_both_weeks_and_detects_the_week_2_drift(tmp_path, kafka_bootstrap, blog_topic):
    trainer = Runner(tmp_path, kafka_bootstrap, blog_topic)
    summary = trainer.ok("--mode", "replay")
    assert summary["records"] == ROWS and summary["stop_reason"] == "end_offsets"
    batches = trainer.batches()
    assert len(batches) == 112
    assert window_accuracy_at(batches, WEEK2) >= 0.95  # end of week 1
    assert window_accuracy_at(batches, ROWS) >= 0.95  # end of week 2
    events = trainer.drift_events()
    assert summary["drift_events"] == len(events) >= 1
    first = events[0]
    detected_at = first.seq + next(b.n for b in batches if b.batch_key == first.batch_key)
    assert WEEK2 < detected_at <= WEEK2 + 500, f"drift detected after {detected_at - WEEK2} records of week 2"
    assert first.detector == "ewma" and first.reaction == "shrink" and first.run_id == summary["run_id"]
    assert first.accuracy_before > 0.9 and first.accuracy_after < 0.7
    assert first.offsets == {"0": first.seq} and first.event_time is not None


def test_drift_state_survives_a_resume_in_the_middle_of_the_drift(tmp_path, kafka_bootstrap, blog_topic):
    """A run stopped one mini-batch into week 2 and resumed detects the drift where an uninterrupted run does,
    and (reaction shrink: buffer cut, learning rate boosted across the resume) trains the same model."""
    whole = Runner(tmp_path / "whole", kafka_bootstrap, blog_topic)
    whole.ok("--mode", "replay", "--drift", "shrink")
    split = Runner(tmp_path / "split", kafka_bootstrap, blog_topic)
    split.ok("--mode", "replay", "--drift", "shrink", "--max-records", str(WEEK2 + 100))
    assert split.drift_events() == []
    split.ok("--mode", "replay", "--drift", "shrink")
    (a,), (b,) = whole.drift_events(), split.drift_events()
    assert (a.batch_key, a.seq, a.reaction) == (b.batch_key, b.seq, "shrink")
    assert a.accuracy_before == pytest.approx(b.accuracy_before) and a.accuracy_after == pytest.approx(b.accuracy_after)
    curve_a = [r.window_accuracy for r in whole.batches()]
    curve_b = [r.window_accuracy for r in split.batches()]
    assert len(curve_a) == len(curve_b) == 112
    assert max(abs(p - q) for p, q in zip(curve_a, curve_b)) <= 0.002
    assert curve_a[-1] >= 0.95


def test_week_1_returning_is_recalled_from_memory(tmp_path, kafka_bootstrap):
    """The file, then its week 1 again: the model stored at the week-2 drift is recalled within 300 records of the
    return (a ``recall`` event by the ``memory``), and predicts the returned week at once."""
    from include.ingest.interval import ingest_files

    again = tmp_path / "week1-again.csv"
    again.write_bytes(b"".join(BLOG_FILE.read_bytes().splitlines(keepends=True)[:WEEK2]))
    topic = unique("blog-recurring")
    settings = settings_from_env({"RETRAIN_STATE_DIR": str(tmp_path / "ingest"), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                                  "RETRAIN_TOPIC": topic, "RETRAIN_SCHEMA": "blog_drift"})
    assert ingest_files([BLOG_FILE, again], settings=settings).rows == ROWS + WEEK2
    trainer = Runner(tmp_path, kafka_bootstrap, topic)
    summary = trainer.ok()  # the defaults
    assert summary["records"] == ROWS + WEEK2
    batches = trainer.batches()
    events = trainer.drift_events()
    assert [e.reaction for e in events] == ["shrink", "recall"], [(e.seq, e.detector, e.reaction) for e in events]
    recall = events[1]
    recalled_at = recall.seq + next(b.n for b in batches if b.batch_key == recall.batch_key)
    assert ROWS < recalled_at <= ROWS + 300, f"recalled {recalled_at - ROWS} records after the return"
    assert recall.detector == "memory" and recall.accuracy_after >= recall.accuracy_before + 0.1
    after = [b for b in batches if b.seq >= recalled_at][:10]
    assert sum(b.prequential_accuracy * b.n for b in after) / sum(b.n for b in after) >= 0.9
    assert batches[-1].window_accuracy >= 0.95  # the end: held-out rows of the returned week only


def test_batch_baseline_records_a_run_of_its_kind(tmp_path, kafka_bootstrap, blog_topic):
    from include.training.baseline import train_baseline

    settings = settings_from_env({"RETRAIN_STATE_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                                  "RETRAIN_TOPIC": blog_topic, "RETRAIN_SCHEMA": "blog_drift",
                                  "RETRAIN_CONSUMER_GROUP": unique("trainer"), "RETRAIN_STREAM_TIMEOUT_S": "3"})
    summary = train_baseline(settings, model_name="blog", epochs=3, dag_id="train_baseline", dag_run_id="manual__1")
    assert summary["status"] == "success" and summary["records"] == ROWS and summary["poison"] == 0
    assert summary["train_rows"] == 8_959 and summary["heldout_rows"] == ROWS - 8_959
    with db.session_factory(settings.db_url)() as s:
        (run,) = s.scalars(select(db.TrainingRun)).all()
        assert s.scalars(select(db.BatchMetric)).all() == []
    assert run.kind == "batch_baseline" and run.status == "success" and run.model_name == "blog"
    assert run.window_accuracy == pytest.approx(summary["heldout_accuracy"]) and 0.5 < run.window_accuracy <= 1.0
    assert run.offsets_from == {"0": 0} and run.offsets_to == {"0": ROWS} and run.records == ROWS
    assert (run.dag_id, run.dag_run_id, run.ended_at is not None) == ("train_baseline", "manual__1", True)
    # It never moves the trainer's consumer group.
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": settings.consumer_group})
    try:
        assert consumer.committed([TopicPartition(blog_topic, 0)], timeout=30)[0].offset < 0
    finally:
        consumer.close()
