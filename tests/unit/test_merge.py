"""The event-time merge of several partitions (include.kafka.merge) against plain-Python references.

* Partitions whose event times never go back: the merge is ``sorted()`` by (event time, partition, offset).
* Any partitions (late records included): the merge is the head-by-head merge written out in plain Python (at each
  step the oldest untrained record of every partition is a candidate; the one with the smallest (event time,
  partition) goes), whatever the fetches the records came in and whenever partitions reach their end.
* Resumed anywhere: the merge restarted at any position of the merged order (as a run restarts at a checkpoint's
  next offsets, with nothing of the past) continues exactly as the uninterrupted merge.
* Released only what is certain: records are never released while a partition that is still being read could
  deliver one that comes first; a record limit cuts a prefix and keeps the rest.
"""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from include.kafka.merge import EventTimeMerge, merge_keys
from include.kafka.records import Records

Log = dict[int, list[tuple[int, int]]]  # partition -> [(offset, event time)] in offset order


def head_merge(log: Log, start: dict[int, int] | None = None) -> list[tuple[int, int]]:
    """The reference: (partition, offset) in merged order, from ``start`` (index into each partition's records)."""
    pos = {p: (start or {}).get(p, 0) for p in log}
    out = []
    while True:
        heads = [(log[p][pos[p]][1], p) for p in log if pos[p] < len(log[p])]
        if not heads:
            return out
        _, p = min(heads)
        out.append((p, log[p][pos[p]][0]))
        pos[p] += 1


def fetches_of(log: Log, rng: random.Random, start: dict[int, int] | None = None) -> list[list[tuple[int, int, int]]]:
    """The log (from ``start``) as a client might deliver it: partitions interleaved at random, random fetch sizes."""
    pos = {p: (start or {}).get(p, 0) for p in log}
    stream = []
    while any(pos[p] < len(log[p]) for p in log):
        p = rng.choice([q for q in log if pos[q] < len(log[q])])
        for _ in range(rng.choice([1, 1, 2, 5, 30])):
            if pos[p] < len(log[p]):
                offset, ts = log[p][pos[p]]
                stream.append((p, offset, ts))
                pos[p] += 1
    fetches, i = [], 0
    while i < len(stream):
        size = rng.choice([1, 3, 10, 50, 400])
        fetches.append(stream[i:i + size])
        i += size
    return fetches


def records(fetch: list[tuple[int, int, int]]) -> Records:
    return Records.of([f"{p}:{o}".encode() for p, o, _ in fetch], [p for p, _, _ in fetch],
                      [o for _, o, _ in fetch], [t for _, _, t in fetch])


def run_merge(log: Log, rng: random.Random, start: dict[int, int] | None = None,
              limit: int | None = None) -> list[tuple[int, int]]:
    """The merge as the reader drives it: each fetch added, partitions ended when their last record arrived, then
    whatever can be released (at most ``limit`` at a time)."""
    start = start or {}
    todo = {p for p in log if start.get(p, 0) < len(log[p])}
    merge = EventTimeMerge(todo)
    last = {p: log[p][-1][0] for p in todo}
    out: list[tuple[int, int]] = []

    def drain() -> None:
        while True:
            got = merge.release(limit)
            _check_released(got)
            out.extend(zip(got.partitions.tolist(), got.offsets.tolist()))
            if limit is None or len(got) < limit:
                return

    for fetch in fetches_of(log, rng, start):
        merge.add(records(fetch))
        for p, o, _ in fetch:
            if o == last[p]:
                merge.end(p)
        drain()
    assert merge.buffered == 0 and not any(merge.holds(p) for p in log)
    return out


def _check_released(got: Records) -> None:
    assert len(got.values) == len(got.partitions) == len(got.offsets) == len(got.timestamps)
    assert got.values == [f"{p}:{o}".encode() for p, o in zip(got.partitions.tolist(), got.offsets.tolist())]


def make_log(rng: random.Random, partitions: int, n: int, late: float, gaps: bool = True) -> Log:
    """Offsets with gaps (transaction markers), event times mostly rising per partition; ``late`` of them go back."""
    log: Log = {}
    for p in range(partitions):
        offset, ts, rows = rng.randrange(0, 50), rng.randrange(0, 100), []
        for _ in range(rng.randrange(0, n + 1)):
            ts += rng.choice([0, 0, 1, 3, 10])
            stamp = ts - rng.randrange(1, 60) if rng.random() < late else ts
            rows.append((offset, stamp))
            offset += rng.choice([1, 1, 1, 2]) if gaps else 1
        log[p] = rows
    return log


logs = st.builds(lambda seed, k, n, late: make_log(random.Random(seed), k, n, late),
                 st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(0, 120), st.sampled_from([0.0, 0.05, 0.3]))


@settings(max_examples=150, deadline=None)
@given(log=logs, seed=st.integers(0, 2**32 - 1), limit=st.sampled_from([None, 1, 7, 100]))
def test_the_merge_is_the_head_by_head_merge_whatever_the_fetches(log, seed, limit):
    assert run_merge(log, random.Random(seed), limit=limit) == head_merge(log)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 6), n=st.integers(0, 120))
def test_rising_event_times_merge_as_sorted_by_time_partition_offset(seed, k, n):
    rng = random.Random(seed)
    log = make_log(rng, k, n, late=0.0)
    reference = [(p, o) for _, p, o in sorted((t, p, o) for p, rows in log.items() for o, t in rows)]
    assert run_merge(log, rng) == reference


@settings(max_examples=100, deadline=None)
@given(log=logs, seed=st.integers(0, 2**32 - 1), cut=st.floats(0, 1))
def test_a_merge_resumed_anywhere_continues_the_uninterrupted_order(log, seed, cut):
    full = head_merge(log)
    k = int(cut * len(full))
    # Where a checkpoint after the first k merged records says each partition resumes (index of its next record).
    start = {p: sum(1 for q, _ in full[:k] if q == p) for p in log}
    assert run_merge(log, random.Random(seed), start=start) == full[k:]
    assert head_merge(log, start) == full[k:]


def test_nothing_is_released_while_an_open_partition_could_still_come_first():
    merge = EventTimeMerge([0, 1, 2])
    merge.add(Records.of([b"a"], [0], [10], [100]))
    assert len(merge.release()) == 0  # partitions 1 and 2 have sent nothing yet
    merge.add(Records.of([b"c"], [1], [0], [150]))
    assert len(merge.release()) == 0  # partition 2 still nothing
    merge.add(Records.of([b"d"], [2], [5], [100]))
    # 0@100 and 2@100 tie: the lower partition goes first, and 2@100 waits, since partition 0's next record might be
    # at 100 too and would come before it.
    assert merge.release().values == [b"a"]
    merge.add(Records.of([b"b"], [0], [11], [200]))
    assert merge.release().values == [b"d"]  # 1@150 waits: partition 2 might still send something older
    merge.end(2)
    assert merge.release().values == [b"c"]  # 0@200 waits for partition 1
    merge.add(Records.of([b"e"], [1], [1], [120]))  # late: after 1@150 in its partition, so merge key 150
    assert merge.release().values == [b"e"]
    merge.end(1)
    assert merge.release().values == [b"b"]
    assert merge.buffered == 0 and merge.release().values == []


def test_a_late_record_is_trained_at_its_partition_position_not_moved_back():
    log = {0: [(0, 10), (1, 50), (2, 20), (3, 60)], 1: [(0, 30), (1, 40), (2, 55)]}
    # 0@20 comes after 0@50 in partition 0, so after everything merged before 0@50, with the key 50 of it.
    assert head_merge(log) == [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (1, 2), (0, 3)]
    assert run_merge(log, random.Random(1)) == head_merge(log)
    np.testing.assert_array_equal(merge_keys(np.array([10, 50, 20, 60])), [10, 50, 50, 60])
    np.testing.assert_array_equal(merge_keys(np.array([20, 60]), previous=50), [50, 60])


# --- the reader drives the merge ------------------------------------------------------------------------------


class PollingConsumer:
    """A consumer whose polls hand out ``messages`` in order, at most ``num_messages`` (and a random few) at a time."""

    def __init__(self, messages: list, rng: random.Random) -> None:
        self.messages, self.rng = messages, rng
        self.unassigned: list[int] = []

    def assign(self, partitions) -> None:
        pass

    def incremental_unassign(self, partitions) -> None:
        self.unassigned.extend(tp.partition for tp in partitions)

    def consume(self, num_messages: int, timeout: float) -> list:
        take = min(num_messages, self.rng.choice([1, 5, 50, 500]))
        out, self.messages = self.messages[:take], self.messages[take:]
        return out


def reader_over(log: Log, end: dict[int, int], rng: random.Random, **limits):
    """A BoundedReader (its consumer faked) over ``log``'s records, ``end`` the end offsets seen at start: the
    partitions' records interleaved at random, an end-of-partition event where a partition's readable data ends and
    records past the end (arriving later) as well."""
    from include.kafka.reader import BoundedReader, ReadPlan
    from tests.unit.test_columnar import FakeMsg, eof

    start = {p: (rows[0][0] if rows else end[p]) for p, rows in log.items()}
    queues = {p: [FakeMsg(p, o, f"{p}:{o}".encode(), t) for o, t in rows] + [eof(p, end[p])]
              for p, rows in log.items()}
    for p in queues:  # a record written after the run started: past the end seen at start, not read in this run
        queues[p].insert(len(queues[p]) - 1, FakeMsg(p, end[p] + 1, b"past the end", 0))
    messages = []
    while any(queues.values()):
        p = rng.choice([q for q in queues if queues[q]])
        k = rng.choice([1, 3, 40])
        messages.extend(queues[p][:k])
        del queues[p][:k]
    reader = BoundedReader(clients=None, topic="t", group_id="g", stream_timeout_s=0.5, **limits)
    reader.plan = ReadPlan("t", None, start, end, dict(start), {p: None for p in log})
    reader._consumer = PollingConsumer(messages, rng)
    return reader


def read_all(reader) -> tuple[list[tuple[int, int]], int]:
    got = []
    for fetch in reader.fetches(64):
        _check_released(fetch)
        got.extend(zip(fetch.partitions.tolist(), fetch.offsets.tolist()))
    return got, reader.records


@settings(max_examples=60, deadline=None)
@given(log=logs, seed=st.integers(0, 2**32 - 1))
def test_the_reader_hands_over_the_merged_order_and_moves_drained_partitions_to_their_end(log, seed):
    from include.kafka.reader import STOP_END_OFFSETS, STOP_NOTHING_NEW

    rng = random.Random(seed)
    end = {p: (rows[-1][0] + rng.choice([1, 2]) if rows else 0) for p, rows in log.items()}  # + a marker maybe
    reader = reader_over(log, end, rng)
    got, delivered = read_all(reader)
    assert got == head_merge(log) and delivered == len(got)
    assert reader.stop_reason == (STOP_END_OFFSETS if got else STOP_NOTHING_NEW)
    trained = {p: o + 1 for p, o in got}
    assert reader.next_offsets_after(trained) == {p: end[p] for p in log if log[p]}


@settings(max_examples=60, deadline=None)
@given(log=logs, seed=st.integers(0, 2**32 - 1), cut=st.floats(0, 1))
def test_a_record_limit_stops_at_a_prefix_of_the_merge_and_the_rest_is_read_again(log, seed, cut):
    from include.kafka.reader import STOP_END_OFFSETS, STOP_MAX_RECORDS, STOP_NOTHING_NEW

    rng = random.Random(seed)
    full = head_merge(log)
    limit = max(1, int(cut * len(full)))
    end = {p: (rows[-1][0] + 1 if rows else 0) for p, rows in log.items()}
    reader = reader_over(log, end, rng, max_records=limit)
    got, _ = read_all(reader)
    assert got == full[:limit]
    if not full:
        assert reader.stop_reason == STOP_NOTHING_NEW
    elif limit < len(full):
        assert reader.stop_reason == STOP_MAX_RECORDS
    else:
        assert reader.stop_reason in (STOP_MAX_RECORDS, STOP_END_OFFSETS)
    trained = {p: o + 1 for p, o in got}
    after = reader.next_offsets_after(trained)
    # A partition fetched to its end whose records the merge still held is not moved past them.
    for p, rows in log.items():
        left = [o for o, _ in rows if (p, o) not in set(got)]
        if left:
            assert after.get(p, rows[0][0]) <= left[0]
