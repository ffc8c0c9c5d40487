"""SIGKILL of the broker during ingest and during training (the suite's own broker, restarted at once).

The run under test either finishes (its clients ride out the outage) or fails cleanly; either way the next
run resumes and every row lands, and every offset is trained, exactly once.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException

from include.ingest.errors import IngestError

from include.ingest.interval import ingest_files
from include.kafka.reader import OffsetError
from tests.faults.helpers import (
    check_history,
    check_topic,
    check_training,
    drone_rows,
    durable_state,
    env_for,
    Outage,
    ledger,
    settings_for,
    stage_hooks,
    train_in_process,
    unique,
    write_csv,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def broker_outage(broker) -> Outage:
    """SIGKILL the suite's broker; it starts again in the background."""
    return Outage(lambda: broker.kill() or "the broker", lambda _: broker.start(), broker.bootstrap)


def test_broker_sigkill_during_ingest(tmp_path, running_broker, fault_row):
    topic = unique("bk-ingest")
    big, small = drone_rows(100_000), drone_rows(500, start=100_000)
    files = [write_csv(tmp_path / "landing" / "observations_2026-01-05.csv", big),
             write_csv(tmp_path / "landing" / "observations_2026-01-06.csv", small)]
    env = env_for(tmp_path / "state", running_broker.bootstrap, topic)
    outage = broker_outage(running_broker)
    try:
        # Killed inside the first file's transaction, after 65,536 rows were handed to the producer.
        with stage_hooks({"ingest_mid_file": lambda n: outage() if n == 1 else None}):
            first = ingest_files(files, settings=settings_for(env))
        outcome = "the run rode out the outage: " + ", ".join(f.status for f in first.files)
    except (IngestError, KafkaException) as exc:
        outcome = f"the run failed cleanly ({type(exc).__name__}); the retry finished it"
    outage.join()
    second = ingest_files(files, settings=settings_for(env))
    assert {f.status for f in second.files} <= {"skipped", "committed", "recovered"}
    check = check_topic(running_broker.bootstrap, topic, big + small)
    fault_row("broker SIGKILL during ingest (mid-file), restarted", runs=2, produced=len(big) + len(small),
              in_topic=check.in_topic, duplicates=check.duplicates, losses=check.losses + check.unexpected,
              note=outcome)
    assert check.exact, check
    assert ledger(env) == {str(files[0]): ("committed", len(big)), str(files[1]): ("committed", len(small))}


def test_broker_sigkill_during_training(tmp_path, running_broker, fault_row):
    topic = unique("bk-train")
    rows = drone_rows(1200)
    env = env_for(tmp_path / "state", running_broker.bootstrap, topic)
    ingest_files([write_csv(tmp_path / "landing" / "observations_2026-01-05.csv", rows)], settings=settings_for(env))
    data = check_topic(running_broker.bootstrap, topic, rows)
    outage = broker_outage(running_broker)
    try:
        # Killed after the second train step; the checkpoint, history and offset commit that follow meet the outage.
        summary = train_in_process(env, {"train_after_step": lambda n: outage() if n == 2 else None})
        outcome = f"the run rode out the outage ({summary.records} records, {summary.stop_reason})"
    except (KafkaException, OffsetError, RuntimeError) as exc:
        outcome = f"the run failed cleanly ({type(exc).__name__}); the next one resumed"
    outage.join()
    state = durable_state(env, data.offsets[0])
    assert not state.problems, state.problems
    train_in_process(env)
    final = check_training(settings_for(env).db_url, data.offsets)
    fault_row("broker SIGKILL during training, restarted", runs=2, produced=len(rows), in_topic=data.in_topic,
              trained=final.trained, duplicates=final.duplicates + data.duplicates,
              losses=final.losses + data.losses, note=outcome)
    assert final.exact and final.n_sum == len(rows), final
    check_history(env)
