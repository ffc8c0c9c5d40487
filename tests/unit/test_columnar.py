"""The columnar hand-over (include.kafka.records, BoundedReader._accept, ReadTrainLoop, history_rows.batch_rows) gives
exactly what the per-message path gave: the same accepted messages, drained partitions and unassigns per poll, the
same mini-batches, history rows, next offsets and dead letters.

The reference is the per-message code as it was before the columnar path (kept here, verbatim in substance), run on
the same fixed input: several partitions, offset gaps where transaction markers and aborted records sat, partition
ends, messages past the end seen at start, poison values, tombstones and messages without a timestamp.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from confluent_kafka import KafkaError

from include.demo.reference import BLOG_FILE
from include.kafka.reader import BoundedReader, ReadPlan
from include.kafka.records import Message, Records
from include.schema import load_schema
from include.training.chunks import decoder
from include.training.durability import Progress
from include.training.history_rows import RunIdentity, batch_rows, finite, jsonable_offsets
from include.training.learner_config import BatchMetrics, split_sizes
from include.training.loop import ReadTrainLoop
from include.training.options import TrainSummary

GOOD_ROW = b"1,2,7,8,1,1,38,11,1,2,40,6,11,24"
# The author's rows (they differ), so rows shifted between mini-batches would change the metrics.
ROWS = [r for r in BLOG_FILE.read_bytes().lstrip(b"\xef\xbb\xbf").split(b"\r\n")[:500] if r.count(b",") == 13]


# --- fakes of confluent-kafka's messages and consumer ---------------------------------------------------------


class FakeError:
    def __init__(self, code: int, text: str = "") -> None:
        self._code, self._text = code, text

    def code(self) -> int:
        return self._code

    def __str__(self) -> str:
        return self._text


class FakeMsg:
    def __init__(self, partition: int, offset: int, value: Any = GOOD_ROW, ts: int | None = 1_000,
                 error: FakeError | None = None) -> None:
        self._p, self._o, self._v, self._ts, self._err = partition, offset, value, ts, error

    def error(self):
        return self._err

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self):
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return (0, -1) if self._ts is None else (1, self._ts)


class FakeConsumer:
    def __init__(self) -> None:
        self.unassigned: list[int] = []

    def incremental_unassign(self, tps) -> None:
        self.unassigned.extend(tp.partition for tp in tps)


def eof(partition: int, offset: int) -> FakeMsg:
    return FakeMsg(partition, offset, None, None, FakeError(KafkaError._PARTITION_EOF))


# --- the per-message reference ----------------------------------------------------------------------------------


def old_accept(polled, todo: set[int], plan: ReadPlan, drained: dict[int, int], unassigned: list[int]) -> list[Message]:
    """BoundedReader._accept as it was: one Message per data message, in order."""
    accepted = []

    def drain(p):
        todo.discard(p)
        drained[p] = plan.end[p]

    for msg in polled:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                if msg.partition() in todo and msg.offset() >= plan.end[msg.partition()]:
                    drain(msg.partition())
                continue
            raise RuntimeError(str(err))
        p = msg.partition()
        if p not in todo:
            continue
        offset = msg.offset()
        if offset >= plan.end[p]:
            drain(p)
            unassigned.append(p)
            continue
        ts_type, ts = msg.timestamp()
        accepted.append(Message(p, offset, msg.value(), ts if ts_type else None))
        if offset + 1 >= plan.end[p]:
            drain(p)
    return accepted


def old_batch_row(identity: RunIdentity, batch: list[Message], metrics: BatchMetrics, *, seq: int, index: int) -> dict:
    """history_rows.batch_row as it was: one row from a list of messages."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    times = [msg.timestamp_ms for msg in batch if msg.timestamp_ms is not None]
    for msg in batch:
        if msg.offset >= 0:
            first.setdefault(msg.partition, msg.offset)
            last[msg.partition] = msg.offset
    key = ",".join(f"p{p}:{o}" for p, o in sorted(first.items())) or f"tfio:{identity.run_id}:{index}"
    return {
        "model_name": identity.model_name, "batch_key": key, "run_id": identity.run_id, "kind": identity.kind,
        "seq": seq, "batch_index": index, "offsets_from": jsonable_offsets(first),
        "offsets_to": jsonable_offsets({p: o + 1 for p, o in last.items()}), "n": len(batch),
        "n_train": int(metrics.n_train), "n_eval": int(metrics.n_eval), "loss": finite(metrics.loss),
        "train_accuracy": finite(metrics.train_accuracy), "window_accuracy": finite(metrics.window_accuracy),
        "prequential_accuracy": finite(metrics.prequential_accuracy),
        "event_time_min": min(times) if times else None, "event_time_max": max(times) if times else None,
    }


# --- fixed input ----------------------------------------------------------------------------------------------


def stream(seed: int = 7) -> tuple[list[list[FakeMsg]], ReadPlan]:
    """Polls over 3 partitions: offset gaps (markers, aborted data), poison and tombstones, missing timestamps,
    partition ends (EOF events) and messages past the end seen at start."""
    rng = random.Random(seed)
    start = {0: 5, 1: 0, 2: 100, 3: 7, 4: 0}
    end = {0: 900, 1: 650, 2: 1_300, 3: 7, 4: 10}
    next_off = dict(start)
    msgs: list[FakeMsg] = []
    while any(next_off[p] < end[p] + 40 for p in (0, 1, 2)):
        p = rng.choice([0, 1, 2])
        if next_off[p] >= end[p] + 40:
            continue
        next_off[p] += rng.choice([1, 1, 1, 1, 2, 3])  # gaps: transaction markers and aborted records
        off = next_off[p] - 1
        kind = rng.random()
        good = ROWS[(off * 7 + p) % len(ROWS)]
        value = good if kind > 0.06 else rng.choice([b"garbage", b"", None, b"1,2", b"\xff\xfe,1,1,1,1"])
        ts = None if rng.random() < 0.1 else 1_700_000_000_000 + off * 1000 + p
        msgs.append(FakeMsg(p, off, value, ts))
        if rng.random() < 0.01:
            msgs.append(eof(p, off + 1))
        if off + 1 >= end[p] and rng.random() < 0.5:
            msgs.append(eof(p, end[p] + 1))  # the end: only a marker after the last data message
    # Partition 4: the last data message before the end is followed by markers, then data past the end.
    for k, off in enumerate([0, 1, 2, 3, 4, 5, 6, 12, 13]):
        msgs.insert(300 * (k + 1), FakeMsg(4, off, GOOD_ROW, 1_700_000_000_000 + off))
    polls, i = [], 0
    while i < len(msgs):
        size = rng.choice([1, 7, 64, 100, 333, 1000])
        polls.append(msgs[i:i + size])
        i += size
    return polls, ReadPlan("t", None, start, end, {p: 0 for p in start}, {p: None for p in start})


def new_reader(plan: ReadPlan) -> BoundedReader:
    reader = BoundedReader(clients=None, topic="t", group_id="g")
    reader.plan, reader._consumer = plan, FakeConsumer()
    return reader


def test_a_poll_is_accepted_as_the_per_message_reader_accepted_it():
    polls, plan = stream()
    todo_old = {p for p in plan.start if plan.start[p] < plan.end[p]}
    todo_new = set(todo_old)
    drained_old: dict[int, int] = {}
    unassigned_old: list[int] = []
    reader = new_reader(plan)
    delivered = 0
    for poll in polls:
        old = old_accept(poll, todo_old, plan, drained_old, unassigned_old)
        new = reader._accept(poll, todo_new, plan)
        assert new.messages() == old
        assert todo_new == todo_old
        delivered += len(new)
    assert reader.drained == drained_old and reader._consumer.unassigned == unassigned_old
    assert delivered > 1_500 and unassigned_old  # the input did exercise the past-the-end rule
    assert not todo_new


def test_a_consumer_error_is_raised_and_an_offset_out_of_range_is_an_offset_error():
    import pytest

    from include.kafka.reader import OffsetError

    polls, plan = stream()
    reader = new_reader(plan)
    with pytest.raises(OffsetError):
        reader._accept([FakeMsg(0, 5), FakeMsg(0, 6, error=FakeError(KafkaError._AUTO_OFFSET_RESET, "reset"))],
                       {0, 1, 2}, plan)
    with pytest.raises(RuntimeError, match="boom"):
        reader._accept([FakeMsg(0, 5, error=FakeError(KafkaError._TRANSPORT, "boom"))], {0, 1, 2}, plan)


# --- the loop: mini-batches, rows, offsets, dead letters ---------------------------------------------------


class FakeLearner:
    class config:  # noqa: N801 - mimics LearnerConfig's attribute
        batch_messages = 100


class FakeDrift:
    """Metrics that depend on the mini-batch's position, good rows and their values, so a shifted cut would show."""

    def __init__(self) -> None:
        self.calls = 0
        self.seen_rows = 0

    def process(self, learner, x, y, sizes):
        self.chunk_start = self.seen_rows
        out = []
        for s in sizes:
            rows = slice(self.seen_rows - self.chunk_start, self.seen_rows - self.chunk_start + s)
            out.append(BatchMetrics(index=self.calls, n=s, n_train=int(s * 0.8), n_eval=s - int(s * 0.8),
                                    loss=float(x[rows].sum() + y[rows].sum()), train_accuracy=float("nan"),
                                    window_accuracy=s / 100,
                                    prequential_accuracy=self.seen_rows / 1e5, window_size_now=0))
            self.calls += 1
            self.seen_rows += s
        assert len(y) == sum(sizes) == x.shape[0]
        return out, []


class FakeDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[Message, str]] = []

    @property
    def count(self) -> int:
        return len(self.sent)

    def send(self, message: Message, reason: str) -> None:
        self.sent.append((message, reason))


class FakeDurability:
    def save(self, progress, summary) -> None:
        raise AssertionError("no checkpoint cadence reached in this test")


IDENTITY = RunIdentity(run_id="r", kind="incremental", model_name="m", schema_id="s", topic="t", consumer_group="g",
                       reader="confluent", mode="single_pass", dag_id=None, dag_run_id=None)


def old_loop(batches: list[list[Message]], chunk_batches: int, start: dict[int, int]):
    """ReadTrainLoop as it was: whole mini-batches gathered into chunks; rows, offsets, dead letters per message."""
    from include.training.decode import decode_batch

    schema = load_schema("blog_drift")
    drift, rows, dead = FakeDrift(), [], []
    next_offsets, total, index = dict(start), 0, 0
    chunks, pending = [], []
    for batch in batches:
        pending.append(batch)
        if sum(map(len, pending)) >= chunk_batches * 100:
            chunks.append(pending)
            pending = []
    if pending:
        chunks.append(pending)
    for chunk in chunks:
        messages = [m for b in chunk for m in b]
        decoded = decode_batch(schema, [m.value for m in messages])
        dead += [(messages[i], reason) for i, reason in decoded.errors]
        good = np.zeros(len(messages), dtype=bool)
        good[decoded.good] = True
        sizes, s0 = [], 0
        for b in chunk:
            sizes.append(int(good[s0:s0 + len(b)].sum()))
            s0 += len(b)
        metrics, _ = drift.process(None, decoded.x, decoded.y, sizes)
        for b, m in zip(chunk, metrics):
            rows.append(old_batch_row(IDENTITY, b, m, seq=total, index=index))
            for msg in b:
                if msg.offset + 1 > next_offsets.get(msg.partition, -1):
                    next_offsets[msg.partition] = msg.offset + 1
            total += len(b)
            index += 1
    return rows, next_offsets, dead


def new_loop(fetches: list[Records], chunk_batches: int, start: dict[int, int], *, fetch_is_batch: bool = False):
    schema = load_schema("blog_drift")
    progress = Progress.resumed(start, {}, register=False)
    summary = TrainSummary(run_id="r", status="running", stop_reason=None)
    dead = FakeDeadLetters()
    loop = ReadTrainLoop(schema=schema, learner=FakeLearner(), drift=FakeDrift(), dead_letters=dead,
                         durability=FakeDurability(), progress=progress, summary=summary, identity=IDENTITY,
                         chunk_messages=100 * chunk_batches, checkpoint_every_s=1e9)
    loop.run(fetches, fetch_is_batch=fetch_is_batch)
    loop.train_pending()
    return progress.history, progress.next_offsets, dead.sent, summary


def accepted_stream() -> tuple[list[Records], list[Message], ReadPlan]:
    polls, plan = stream()
    reader = new_reader(plan)
    todo = {p for p in plan.start if plan.start[p] < plan.end[p]}
    fetches = [reader._accept(poll, todo, plan) for poll in polls]
    return [f for f in fetches if len(f)], [m for f in fetches for m in f.messages()], plan


def test_the_loop_cuts_the_same_mini_batches_rows_offsets_and_dead_letters_as_the_per_message_loop():
    fetches, messages, plan = accepted_stream()
    # Old: the reader cut mini-batches of 100 over the accepted stream; the last one shorter.
    batches = [messages[i:i + 100] for i in range(0, len(messages), 100)]
    decode = decoder(load_schema("blog_drift"))
    for chunk_batches, predecoded in ((1, False), (3, False), (64, False), (1, True), (3, True), (64, True)):
        rows_old, offsets_old, dead_old = old_loop(batches, chunk_batches, plan.start)
        # Decoded in the reader thread a fetch at a time, or by the loop a chunk at a time: the same.
        given = [decode(f) for f in fetches] if predecoded else fetches
        rows_new, offsets_new, dead_new, summary = new_loop(given, chunk_batches, plan.start)
        assert rows_new == rows_old
        assert offsets_new == offsets_old
        assert dead_new == dead_old and dead_old  # poison went to the dead letters, same messages, same reasons
        assert summary.records == len(messages) and summary.batches == len(batches)
    assert any(r["event_time_min"] is not None for r in rows_old)
    assert any(len(r["offsets_from"]) > 1 for r in rows_old)  # mini-batches spanning several partitions


def test_tfio_fetches_are_each_one_mini_batch_keyed_by_run_and_index():
    rng = random.Random(3)
    sizes = [rng.choice([100, 100, 100, 37, 1]) for _ in range(150)]
    fetches = [Records.of([GOOD_ROW] * s, [0] * s, [-1] * s) for s in sizes]
    batches = [f.messages() for f in fetches]
    rows_old, offsets_old, _ = old_loop(batches, 64, {0: 40})
    rows_new, offsets_new, _, _ = new_loop(fetches, 64, {0: 40}, fetch_is_batch=True)
    assert rows_new == rows_old and offsets_new == offsets_old == {0: 40}
    assert [r["n"] for r in rows_new] == sizes
    assert rows_new[5]["batch_key"] == "tfio:r:5"


def test_batch_rows_match_the_per_message_rows_for_any_cut():
    fetches, messages, _ = accepted_stream()
    records = Records.concat(fetches)
    rng = random.Random(11)
    for _ in range(20):
        sizes = []
        while sum(sizes) < len(messages):
            sizes.append(min(rng.choice([0, 1, 5, 100, 250]), len(messages) - sum(sizes)))
        metrics = [BatchMetrics(index=i, n=s, n_train=s, n_eval=0, loss=0.5, train_accuracy=1.0,
                                window_accuracy=1.0, prequential_accuracy=1.0, window_size_now=0)
                   for i, s in enumerate(sizes)]
        new = batch_rows(IDENTITY, records, sizes, metrics, seq=17, index=3)
        old, row, seq = [], 0, 17
        for i, (s, m) in enumerate(zip(sizes, metrics)):
            old.append(old_batch_row(IDENTITY, messages[row:row + s], m, seq=seq, index=3 + i))
            row += s
            seq += s
        assert new == old
    assert split_sizes(len(records), 100) == [len(b) for b in [messages[i:i + 100]
                                                                for i in range(0, len(messages), 100)]]


def test_records_next_offsets_skip_unknown_offsets():
    records = Records.of([b"a", b"b", b"c", b"d"], [0, 1, 0, 2], [4, 9, 7, -1], [1, None, 3, 4])
    assert records.next_offsets() == {0: 8, 1: 10}
    assert records.message(1) == Message(1, 9, b"b", None)
    assert Records.concat([records.slice(0, 1), records.slice(1, 4)]).messages() == records.messages()
