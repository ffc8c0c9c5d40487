"""Several partitions, one training order, through the real broker and the real trainer processes.

A 4-partition topic (keyed by shop id, as ingest writes it) holds two days of rows in event-time order and then a
file of late rows (event times of the first day's first hours, ingested after the second day). The trainer's
mini-batches must be the event-time merge of the log (:mod:`include.kafka.merge`, here checked against the plain
head-by-head reference of tests/unit/test_merge.py, late rows at their partition's position), and the same whatever
the run: two runs on the same log give the same history rows and the same weights (same seed), and a run stopped
twice by a record limit, then resumed from its checkpoints, gives the history of the uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from include.ingest.interval import ingest_files
from tests.faults.helpers import check_training, drone_rows, env_for, settings_for, write_csv
from tests.support import Runner, checkpoint_weights, history_facts, read_topic, unique
from tests.unit.test_merge import head_merge

pytestmark = pytest.mark.integration

PARTITIONS = 4
BATCH = 100
@pytest.fixture(scope="module")
def partitioned(kafka_bootstrap, tmp_path_factory) -> dict:
    """The topic, its data offsets per partition and its records in the reference merge's order."""
    tmp = tmp_path_factory.mktemp("partitions")
    topic = unique("parts")
    env = env_for(tmp / "ingest", kafka_bootstrap, topic, RETRAIN_TOPIC_PARTITIONS=PARTITIONS)
    landing = tmp / "landing"
    files = [write_csv(landing / "observations_2026-01-01.csv", drone_rows(2400)),
             write_csv(landing / "observations_2026-01-02.csv", drone_rows(2400, start=2400)),
             # Late: the first day's first three hours again (other shop types: other rows), after the second day.
             write_csv(landing / "observations_2026-01-03.csv", drone_rows(350, types=("florist", "grocery")))]
    result = ingest_files(files, settings=settings_for(env))
    assert [f.status for f in result.files] == ["committed"] * 3
    messages = read_topic(kafka_bootstrap, topic)
    log: dict[int, list[tuple[int, int]]] = {p: [] for p in range(PARTITIONS)}
    for m in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        log[m.partition()].append((m.offset(), m.timestamp()[1]))
    assert all(len(rows) > 500 for rows in log.values()), {p: len(r) for p, r in log.items()}
    return {"topic": topic, "log": log, "merged": head_merge(log),
            "offsets": {p: [o for o, _ in rows] for p, rows in log.items()}}


def facts(run: Runner) -> list[tuple]:
    return history_facts(run.db_url)


def weights(run: Runner) -> dict[str, np.ndarray]:
    return checkpoint_weights(settings_for(run.env).checkpoint_dir)


def runner(tmp_path: Path, name: str, bootstrap: str, topic: str) -> Runner:
    return Runner(tmp_path / name, bootstrap, topic, schema="drone")


def test_the_mini_batches_are_the_event_time_merge_of_the_log_late_rows_at_their_partition_position(
        tmp_path, kafka_bootstrap, partitioned):
    run = runner(tmp_path, "a", kafka_bootstrap, partitioned["topic"])
    summary = run.ok()
    merged = partitioned["merged"]
    assert summary["records"] == len(merged) and summary["stop_reason"] == "end_offsets"
    rows = run.batches()
    assert len(rows) == -(-len(merged) // BATCH)
    for k, row in enumerate(rows):
        batch = merged[k * BATCH:(k + 1) * BATCH]
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for p, o in batch:
            first.setdefault(str(p), o)
            last[str(p)] = o + 1
        assert (row.seq, row.n, row.offsets_from, row.offsets_to) == (k * BATCH, len(batch), first, last), k
    # The late rows came after the second day in every partition, and were trained there: after rows a day newer.
    # (Merge key: the second day's last hour, 23:00, so they mix with that hour's last rows.)
    late_batches = [r for r in rows[1:] if r.event_time_min <= rows[0].event_time_max]
    assert late_batches and all(r.seq >= 4800 - 2 * BATCH for r in late_batches), [r.seq for r in late_batches]
    check = check_training(run.db_url, partitioned["offsets"])
    assert check.exact and check.n_sum == len(merged), check
    # Read to the end: every partition's next offset is its end, past the commit marker of the last file.
    assert summary["offsets_to"] == summary["end_offsets_at_start"]


@pytest.mark.slow
def test_two_runs_over_the_same_log_give_the_same_history_and_weights(tmp_path, kafka_bootstrap, partitioned):
    one, two = (runner(tmp_path, name, kafka_bootstrap, partitioned["topic"]) for name in ("one", "two"))
    one.ok()
    two.ok()
    assert facts(one) == facts(two)
    w1, w2 = weights(one), weights(two)
    assert w1.keys() == w2.keys() and len(w1) > 4
    for name in w1:
        np.testing.assert_array_equal(w1[name], w2[name], err_msg=name)


@pytest.mark.slow
def test_a_run_stopped_twice_and_resumed_gives_the_uninterrupted_history_and_weights(tmp_path, kafka_bootstrap,
                                                                                     partitioned):
    whole = runner(tmp_path, "whole", kafka_bootstrap, partitioned["topic"])
    whole.ok()
    split = runner(tmp_path, "split", kafka_bootstrap, partitioned["topic"])
    # Stops inside the merge: records of every partition are fetched but not trained, and read again by the next run.
    first = split.ok("--max-records", "1700")
    second = split.ok("--max-records", "2300")
    third = split.ok()
    assert (first["stop_reason"], second["stop_reason"], third["stop_reason"]) == ("max_records", "max_records",
                                                                                  "end_offsets")
    assert first["records"] + second["records"] + third["records"] == len(partitioned["merged"])
    assert second["offsets_from"] == first["offsets_to"] and third["offsets_from"] == second["offsets_to"]
    assert facts(split) == facts(whole)
    w1, w2 = weights(whole), weights(split)
    for name in w1:
        np.testing.assert_array_equal(w1[name], w2[name], err_msg=name)
