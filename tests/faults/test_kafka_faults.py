"""Kafka-side faults: group offsets moved by the broker's own tool, a step slower than max.poll.interval.ms, the
topic deleted and recreated under the trainer, and two ingests and trainers running at once."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from include.ingest.interval import ingest_files
from include.kafka.reader import OffsetError
from tests.faults.helpers import (
    PROJECT,
    batch_rows,
    check_history,
    check_topic,
    check_training,
    committed,
    drone_rows,
    env_for,
    kafka_tool,
    newest_checkpoint,
    settings_for,
    train_in_process,
    trainer_args,
    unique,
    wait_for,
    write_csv,
)
from tests.support import TrainerProcess, create_topic, end_offset, process_env

pytestmark = [pytest.mark.faults, pytest.mark.integration]

GROUP_TOOL = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def _ingested(tmp_path, bootstrap, topic, n, **env_extra):
    env = env_for(tmp_path / "state", bootstrap, topic, **env_extra)
    rows = drone_rows(n)
    plain = {k: v for k, v in env.items() if k != "KAFKA_CONFIG_JSON"}
    ingest_files([write_csv(tmp_path / "landing" / "observations_2026-01-05.csv", rows)], settings=settings_for(plain))
    data = check_topic(bootstrap, topic, rows)
    assert data.exact
    return env, rows, data


def _reset_group(bootstrap: str, group: str, topic: str, offset: int) -> None:
    """Move the group's offset with Kafka's own kafka-consumer-groups tool (which exits 0 even on errors)."""
    result = kafka_tool(GROUP_TOOL, "--bootstrap-server", bootstrap, "--group", group, "--topic", topic,
                        "--reset-offsets", "--to-offset", str(offset), "--execute")
    assert committed(bootstrap, group, topic) == {0: offset}, result.stdout + result.stderr


def test_group_offsets_reset_ahead_and_behind_with_the_kafka_tool(tmp_path, kafka_bootstrap, topic, fault_row):
    env, rows, data = _ingested(tmp_path, kafka_bootstrap, topic, 1500)
    group = env["RETRAIN_CONSUMER_GROUP"]
    train_in_process(env, max_records=600)
    _reset_group(kafka_bootstrap, group, topic, 1400)  # ahead: 800 offsets would be skipped
    ahead = train_in_process(env, max_records=400)
    assert ahead.offsets_from == {"0": 600} and ahead.offsets_to == {"0": 1000}
    _reset_group(kafka_bootstrap, group, topic, 100)  # behind: 900 offsets would be trained twice
    behind = train_in_process(env)
    # Read to the end: past the 1,500 records and the commit marker after them (offset 1,500).
    assert behind.offsets_from == {"0": 1000} and behind.offsets_to == {"0": 1501}
    final = check_training(settings_for(env).db_url, data.offsets)
    fault_row("consumer-group offsets reset ahead (1400) and behind (100) with kafka-consumer-groups", runs=3,
              produced=len(rows), in_topic=data.in_topic, trained=final.trained, duplicates=final.duplicates,
              losses=final.losses, note="the checkpoint wins")
    assert final.exact and final.n_sum == len(rows), final
    check_history(env)


def test_a_step_slower_than_max_poll_interval_does_not_matter(tmp_path, kafka_bootstrap, topic, fault_row, capfd):
    # 6 s: the broker's smallest session timeout (group.min.session.timeout.ms), and max.poll >= session timeout.
    poll = {"max.poll.interval.ms": 6000, "session.timeout.ms": 6000}
    pause = 7.0
    env, rows, data = _ingested(tmp_path, kafka_bootstrap, topic, 1000, KAFKA_CONFIG_JSON=json.dumps(poll))

    # Control: a subscribed consumer with the same settings is thrown out of its group by such a pause.
    member = Consumer({"bootstrap.servers": kafka_bootstrap, **poll, "group.id": unique("member"),
                       "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        member.subscribe([topic])
        deadline = time.monotonic() + 60
        while (msg := member.poll(0.5)) is None or msg.error():
            assert time.monotonic() < deadline, "the control consumer never got a message"
        time.sleep(pause)
        errors = [m.error().code() for m in (member.poll(0.5) for _ in range(4)) if m is not None and m.error()]
        assert KafkaError._MAX_POLL_EXCEEDED in errors, errors
    finally:
        member.close()
    capfd.readouterr()

    # The trainer assigns its partitions (no group membership): a step longer than that changes nothing, neither
    # the reading after it nor the offset commits.
    slow = train_in_process(env, {"train_after_step": lambda n: time.sleep(pause) if n == 1 else None})
    assert slow.status == "success" and slow.offsets_to == {"0": 1001}  # 1,000 records and the commit marker
    logs = capfd.readouterr()
    assert "MAXPOLL" not in logs.err and "maximum poll interval" not in logs.err.lower(), logs.err[-2000:]
    final = check_training(settings_for(env).db_url, data.offsets)
    fault_row("max.poll.interval.ms (6 s) exceeded by a 7 s train step", runs=1, produced=len(rows),
              in_topic=data.in_topic, trained=final.trained, duplicates=final.duplicates, losses=final.losses,
              note="a subscribed consumer with the same settings got MAX_POLL_EXCEEDED")
    assert final.exact, final
    check_history(env)


def _recreate(bootstrap: str, topic: str, rows: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic], operation_timeout=30)[topic].result(60)
    wait_for(lambda: topic not in admin.list_topics(timeout=10).topics, 60, f"{topic} to be deleted", every=0.2)
    deadline = time.monotonic() + 60
    while True:
        try:
            create_topic(bootstrap, topic)
            break
        except KafkaException:  # still being deleted
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for row in rows:
        producer.produce(topic, row.encode())
    assert producer.flush(60) == 0


def test_topic_deleted_and_recreated_under_the_trainer_is_a_clear_error(tmp_path, kafka_bootstrap, topic, fault_row):
    env, rows, data = _ingested(tmp_path, kafka_bootstrap, topic, 1200)
    settings = settings_for(env)
    # The new topic has more messages than the checkpoint's offset, so only the topic id can tell them apart.
    newer = drone_rows(1500, start=50_000)
    try:
        first = train_in_process(env, {"train_after_step": lambda n: _recreate(kafka_bootstrap, topic, newer)
                                       if n == 1 else None})
        outcome = f"the run under it finished on what it had fetched ({first.records} records)"
    except OffsetError:
        outcome = "the run under it failed with OffsetError"
    before = (newest_checkpoint(env).checkpoint_id, len(batch_rows(settings.db_url)),
              committed(kafka_bootstrap, settings.consumer_group, topic))
    with pytest.raises(OffsetError, match="deleted and recreated"):
        train_in_process(env)
    after = (newest_checkpoint(env).checkpoint_id, len(batch_rows(settings.db_url)),
             committed(kafka_bootstrap, settings.consumer_group, topic))
    assert after == before, "the failed run changed the checkpoint, the history or the group"
    # Everything trained came from the old topic (its rows are dated 2026-01-01, the new topic's later).
    old_day_end = datetime(2026, 1, 2, tzinfo=timezone.utc).timestamp() * 1000
    history = batch_rows(settings.db_url)
    assert all(r.event_time_max < old_day_end for r in history), "rows of the new topic were trained"
    trained = check_training(settings.db_url, data.offsets)
    fault_row("topic deleted and recreated (with more messages) under the trainer", runs=2, produced=len(rows),
              in_topic=data.in_topic, trained=trained.trained, duplicates=trained.duplicates,
              losses=trained.losses, note=f"{outcome}; the next run: OffsetError (topic id changed), nothing changed")
    assert trained.duplicates == 0, trained  # (losses only if the topic went away before they were read)


# What the ingest task of a DAG run does for its data interval (here 2026-01-05 to 2026-01-08).
INGEST_INTERVAL = (
    "import json; from datetime import datetime, timezone; from include.ingest.interval import ingest_interval; "
    "utc = timezone.utc; result = ingest_interval(datetime(2026, 1, 5, tzinfo=utc), datetime(2026, 1, 8, tzinfo=utc), "
    "use_airflow=False); print(json.dumps(result.as_dict()))"
)


def _statuses(rc: int, stdout: str) -> str:
    if rc != 0:
        return f"exit {rc} (fenced)"
    return ", ".join(f["status"] for f in json.loads(stdout)["files"])


def test_two_ingests_and_two_trainers_at_once(tmp_path, kafka_bootstrap, topic, fault_row):
    import subprocess
    import sys

    sets = [drone_rows(30_000), drone_rows(400, start=30_000), drone_rows(400, start=30_400)]
    landing = tmp_path / "landing"
    files = [write_csv(landing / f"observations_2026-01-{5 + i:02d}.csv", rows) for i, rows in enumerate(sets)]
    write_csv(landing / "observations_2026-01-08.csv", drone_rows(100, start=40_000))  # the next interval's
    rows = [r for s in sets for r in s]
    env = env_for(tmp_path / "state", kafka_bootstrap, topic, RETRAIN_LANDING_DIR=landing)
    ingests = [subprocess.Popen([sys.executable, "-c", INGEST_INTERVAL], env=process_env(env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=PROJECT) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in ingests]
    assert any(rc == 0 for rc, _, _ in results), [err[-2000:] for _, _, err in results]
    for rc, _out, err in results:  # the loser, if any, was fenced: a clear error, nothing of its own landed
        assert rc in (0, 1), err[-2000:]
        if rc == 1:
            assert "IngestError" in err and "Kafka transaction failed" in err, err[-2000:]
    again = ingest_files(files, settings=settings_for(env))
    assert [f.status for f in again.files] == ["skipped"] * 3
    data = check_topic(kafka_bootstrap, topic, rows)
    assert data.exact, data

    # A trainer holds the lock (paused after its first step) while two more start: both fail fast.
    paused, release, result = threading.Event(), threading.Event(), {}

    def pause(n: int) -> None:
        if n == 1:
            paused.set()
            release.wait(120)

    def holder() -> None:
        try:
            result["summary"] = train_in_process(env, {"train_after_step": pause}, chunk_batches=32,
                                                 checkpoint_every_s=60.0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    try:
        assert paused.wait(300), f"the first trainer never reached its first step: {result}"
        contenders = TrainerProcess(env)
        procs = [contenders.start(*trainer_args()) for _ in range(2)]
        outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    finally:
        release.set()
        thread.join(300)
    assert "error" not in result, result.get("error")
    for rc, err in outcomes:
        assert rc == 3 and "another trainer" in err, err[-2000:]
    # Read to the end: the next offset is past the last record and the commit marker that closes its file.
    end = end_offset(kafka_bootstrap, topic)
    assert end > data.offsets[0][-1] + 1 and result["summary"].offsets_to == {"0": end}
    final = check_training(settings_for(env).db_url, data.offsets)
    fault_row("two ingests of the same interval at once; two trainers started against a running one", runs=5,
              produced=len(rows), in_topic=data.in_topic, trained=final.trained,
              duplicates=final.duplicates + data.duplicates, losses=final.losses + data.losses,
              note=f"the ingests: {'; '.join(_statuses(rc, out) for rc, out, _ in results)}; the extra trainers "
                   f"exited {sorted(rc for rc, _ in outcomes)} (3: busy, changed nothing)")
    assert final.exact, final
    check_history(env)
