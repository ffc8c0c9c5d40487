"""Bounded reading of the observations topic, at explicit offsets, a whole fetch at a time.

The default reader: confluent-kafka with ``assign`` at the offsets the checkpoint says (never the group's
position), auto-commit off, read_committed. A run reads up to the end offsets it saw at start, so producers
writing during the run do not keep it alive, and stops earlier on a consumer timeout, a record limit or a
time limit; :attr:`BoundedReader.stop_reason` says which. :meth:`BoundedReader.fetches` hands over each poll as
columns (:class:`include.kafka.records.Records`: no Python object per message; the trainer reads this way);
:meth:`BoundedReader.batches` makes mini-batches of :class:`include.kafka.records.Message` for callers that want them.
Several partitions come out in one order that depends on the log alone, merged by event time, then partition, then
offset (:mod:`include.kafka.merge`); one partition comes out as it is fetched, in offset order.

An offset that is no longer in the log (retention) or beyond its end (a recreated topic) is a clear error,
never a silent reset. This module never commits offsets on its own: :meth:`BoundedReader.commit` is called
by the trainer only after the checkpoint is durable.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from include.kafka.clients import KafkaClients
from include.kafka.merge import EventTimeMerge
from include.kafka.records import Message, Records

log = logging.getLogger(__name__)

STOP_END_OFFSETS = "end_offsets"
STOP_TIMEOUT = "timeout"
STOP_MAX_RECORDS = "max_records"
STOP_MAX_SECONDS = "max_seconds"
STOP_NOTHING_NEW = "nothing_new"
# How long one poll waits for its messages: short, so a stream that ends mid-poll costs little.
POLL_TIMEOUT_S = 0.1


class OffsetError(RuntimeError):
    """The saved offsets do not fit the topic as it is now (retention, recreated topic)."""


@dataclass
class ReadPlan:
    topic: str
    topic_id: str | None
    start: dict[int, int]
    end: dict[int, int]  # end offsets (high watermarks) at start; nothing at or past them is read
    low: dict[int, int]
    committed: dict[int, int | None]

    @property
    def available(self) -> int:
        return sum(max(0, self.end[p] - self.start[p]) for p in self.start)


@dataclass
class BoundedReader:
    """Reads ``topic`` from ``start_offsets`` (None: the group's committed offsets, else the earliest), up to the end
    offsets seen at start or, where ``stop_offsets`` names a partition, no further than that offset (a rebuild's
    lineage stops exactly at the point the promotion gate compares it at)."""

    clients: KafkaClients
    topic: str
    group_id: str
    start_offsets: Mapping[int, int] | None = None
    stream_timeout_s: float = 10.0
    max_records: int | None = None
    max_seconds: float | None = None
    expected_topic_id: str | None = None
    stop_offsets: Mapping[int, int] | None = None
    stop_reason: str | None = None
    records: int = 0
    # Partitions read up to the end offset seen at start, with that offset: everything below it was fetched (or was
    # a transaction marker or aborted data, which is never delivered), and delivered unless the merge still holds it.
    drained: dict[int, int] = field(default_factory=dict)
    _consumer: Any = field(default=None, repr=False)
    _assigned: bool = field(default=False, repr=False)
    _merge: EventTimeMerge | None = field(default=None, repr=False)
    plan: ReadPlan | None = None

    # -- set-up --------------------------------------------------------------------------------------------
    def open(self) -> ReadPlan:
        from confluent_kafka import TopicPartition

        self._consumer = self.clients.consumer(self.group_id, role="reader")
        metadata = self._consumer.list_topics(self.topic, timeout=30)
        topic_meta = metadata.topics.get(self.topic)
        if topic_meta is None or topic_meta.error is not None:
            raise OffsetError(f"topic {self.topic!r} does not exist ({topic_meta.error if topic_meta else 'no metadata'})")
        partitions = sorted(topic_meta.partitions)
        topic_id = self.clients.topic_id(self.topic)
        if self.expected_topic_id and topic_id and topic_id != self.expected_topic_id:
            raise OffsetError(
                f"topic {self.topic!r} was deleted and recreated (id {self.expected_topic_id} -> {topic_id}); the checkpoint's "
                "offsets belong to the old topic. Retrain from scratch deliberately (new model name / checkpoint folder)."
            )
        low, end = {}, {}
        for p in partitions:
            lo, hi = self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30, cached=False)
            low[p], end[p] = lo, hi
        committed = {
            tp.partition: (tp.offset if tp.offset >= 0 else None)
            for tp in self._consumer.committed([TopicPartition(self.topic, p) for p in partitions], timeout=30)
        }
        if self.start_offsets is not None:
            start = {p: int(self.start_offsets.get(p, low[p])) for p in partitions}
            missing = set(int(p) for p in self.start_offsets) - set(partitions)
            if missing:
                raise OffsetError(f"checkpoint has partitions {sorted(missing)} that topic {self.topic!r} does not have")
        else:
            start = {p: committed[p] if committed[p] is not None else low[p] for p in partitions}
        for p in partitions:
            if start[p] < low[p]:
                raise OffsetError(
                    f"{self.topic}[{p}]: offset {start[p]} is no longer in the log (earliest is {low[p]}, retention removed "
                    f"{low[p] - start[p]} records). Refusing to skip them silently; raise retention or retrain deliberately."
                )
            if start[p] > end[p]:
                raise OffsetError(
                    f"{self.topic}[{p}]: offset {start[p]} is beyond the end of the log ({end[p]}): the topic was "
                    "probably deleted and recreated. Refusing to restart from zero silently."
                )
        for p, stop in (self.stop_offsets or {}).items():
            if int(p) in end:
                end[int(p)] = max(start[int(p)], min(end[int(p)], int(stop)))
        self.plan = ReadPlan(self.topic, topic_id, start, end, low, committed)
        return self.plan

    # -- reading -------------------------------------------------------------------------------------------
    def fetches(self, fetch_messages: int) -> Iterator[Records]:
        """The data messages in training order, as :class:`Records` of about ``fetch_messages`` (a poll's worth).

        No Python object per message: values, partitions, offsets and timestamps come as columns, so a caller cuts
        mini-batches and finds their offsets with numpy. Fetch boundaries mean nothing: the caller cuts. With several
        partitions to read, the order is the event-time merge of :mod:`include.kafka.merge`: each poll is added to
        it and what it can release is handed over; a run that stops before every partition is at its end leaves
        what the merge still holds unread (the next run reads it again from the trained offsets).
        """
        todo = self.start()
        if not todo:
            self.stop_reason = STOP_NOTHING_NEW
            return
        plan = self.plan
        # Several partitions to read: merged by event time (include.kafka.merge). One: its offset order as it comes.
        merge = self._merge = EventTimeMerge(todo) if len(todo) > 1 else None
        started = last_message = time.monotonic()
        position = dict(plan.start)
        while todo:
            want = self._wanted(fetch_messages, started)
            if want is None:
                break
            # Never ask for more than can come (the offsets left; transaction markers among them are made up for by
            # the partition-end events): a poll that asks for more waits out its whole timeout at the stream's end.
            want = max(1, min(want, sum(plan.end[p] - position[p] for p in todo)))
            polled = self._consumer.consume(num_messages=want, timeout=POLL_TIMEOUT_S)
            if not polled:
                if time.monotonic() - last_message >= self.stream_timeout_s:
                    self.stop_reason = STOP_TIMEOUT
                    break
                continue
            records = self._accept(polled, todo, plan)
            last_message = time.monotonic()
            if len(records):
                position.update(records.next_offsets())
            if merge is not None:
                records = self._merged(merge, records, todo)
            if len(records):
                self.records += len(records)
                yield records
        else:
            # Every partition at its end: the merge released all it held, unless the record limit cut it short.
            self.stop_reason = STOP_MAX_RECORDS if merge is not None and merge.buffered else STOP_END_OFFSETS
        if self.stop_reason is None:
            self.stop_reason = STOP_END_OFFSETS

    def _merged(self, merge: EventTimeMerge, records: Records, todo: set[int]) -> Records:
        """A fetch added to the merge; what the merge can release now (within the record limit)."""
        merge.add(records)
        for partition in merge.open - todo:
            merge.end(partition)
        room = None if self.max_records is None else self.max_records - self.records
        return merge.release(room)

    def start(self) -> set[int]:
        """Assign the partitions with something to read at their start offsets (once): from then on the client
        fetches them in its own threads, ahead of :meth:`fetches`. The partitions to read."""
        from confluent_kafka import TopicPartition

        plan = self.plan or self.open()
        todo = {p for p in plan.start if plan.start[p] < plan.end[p]}
        if todo and not self._assigned:
            self._consumer.assign([TopicPartition(self.topic, p, plan.start[p]) for p in sorted(todo)])
            self._assigned = True
        return todo

    def batches(self, batch_messages: int) -> Iterator[list[Message]]:
        """Mini-batches of ``batch_messages`` messages in consumption order; the last one may be shorter.

        For callers that want message objects; the trainer reads :meth:`fetches`.
        """
        pending: list[Message] = []
        for records in self.fetches(batch_messages * 20):
            pending.extend(records.messages())
            while len(pending) >= batch_messages:
                chunk, pending = pending[:batch_messages], pending[batch_messages:]
                yield chunk
        if pending:
            yield pending

    def _wanted(self, fetch_messages: int, started: float) -> int | None:
        """How many messages to ask the next poll for; None (and :attr:`stop_reason` set) when a limit is reached."""
        if self.max_seconds is not None and time.monotonic() - started >= self.max_seconds:
            self.stop_reason = STOP_MAX_SECONDS
            return None
        want = fetch_messages
        if self.max_records is not None:
            want = min(want, self.max_records - self.records)
            if want <= 0:
                self.stop_reason = STOP_MAX_RECORDS
                return None
        return want

    def _accept(self, polled: list[Any], todo: set[int], plan: ReadPlan) -> Records:
        """The data messages of one poll below the end offsets seen at start; partitions read to that end leave
        ``todo``. Raises on an offset that fell out of the log and on any other consumer error.

        Column by column (one pass per field, no object per message); the per-partition rules are numpy work.
        """
        errors = [msg.error() for msg in polled]
        ends: list[int] = []
        if any(err is not None for err in errors):
            polled, ends = self._events(polled, errors, todo, plan)
        n = len(polled)
        partitions = np.fromiter([msg.partition() for msg in polled], np.int32, n)
        offsets = np.fromiter([msg.offset() for msg in polled], np.int64, n)
        keep = self._keep(partitions, offsets, todo, plan)
        if not keep.all():
            polled = [msg for msg, k in zip(polled, keep.tolist()) if k]
            partitions, offsets = partitions[keep], offsets[keep]
        for p in ends:  # after the messages before them
            if p in todo:
                self._drain(todo, p)
        stamps = np.array([msg.timestamp() for msg in polled], dtype=np.int64).reshape(len(polled), 2)
        timed = stamps[:, 0] != 0  # TIMESTAMP_NOT_AVAILABLE
        return Records([msg.value() for msg in polled], partitions, offsets, np.where(timed, stamps[:, 1], 0), timed)

    def _events(self, polled: list[Any], errors: list[Any], todo: set[int],
                plan: ReadPlan) -> tuple[list[Any], list[int]]:
        """The poll's data messages, and the partitions whose end (seen at start) it reached; raises on an error."""
        from confluent_kafka import KafkaError

        data, ends = [], []
        for msg, err in zip(polled, errors):
            if err is None:
                data.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                # The end of what is readable now. Past the last data message there may be only a
                # transaction marker, which is never delivered: the position tells.
                if msg.partition() in todo and msg.offset() >= plan.end[msg.partition()]:
                    ends.append(msg.partition())
            elif err.code() == KafkaError._AUTO_OFFSET_RESET or "out of range" in str(err).lower():
                raise OffsetError(f"{self.topic}[{msg.partition()}]: {err}; offsets fell out of the log")
            else:
                raise RuntimeError(f"consuming {self.topic}: {err}")
        return data, ends

    def _keep(self, partitions: np.ndarray, offsets: np.ndarray, todo: set[int], plan: ReadPlan) -> np.ndarray:
        """Which messages of a poll to deliver: those of partitions still to read, below the end seen at start.

        A message at the last offset before the end drains its partition; one at or past the end (the partition's
        first in this poll past it) drains it too and unassigns it, leaving the rest for the next run.
        """
        from confluent_kafka import TopicPartition

        keep = np.zeros(partitions.size, dtype=bool)
        for p in np.unique(partitions).tolist():
            if p not in todo:
                continue
            mine = partitions == p
            below = mine & (offsets < plan.end[p])
            keep |= below
            if below.any() and int(offsets[below].max()) + 1 >= plan.end[p]:
                self._drain(todo, p)
            elif (mine & ~below).any():
                # Past the end seen at start: leave it for the next run.
                self._drain(todo, p)
                self._consumer.incremental_unassign([TopicPartition(self.topic, p)])
        return keep

    def _drain(self, todo: set[int], partition: int) -> None:
        """``partition`` is read to the end seen at start."""
        todo.discard(partition)
        self.drained[partition] = self.plan.end[partition]

    def next_offsets_after(self, trained: Mapping[int, int]) -> dict[int, int]:
        """The next offset of every partition once the caller has trained everything :meth:`batches` delivered.

        A partition read to the end seen at start moves to that end, past a closing transaction marker too (never
        delivered), so the group's lag reads 0 and the next run does not read it again.

        Args:
            trained: One past the last offset trained (or dead-lettered), per partition.
        """
        offsets = dict(trained)
        for partition, end in self.drained.items():
            if self._merge is not None and self._merge.holds(partition):
                continue  # read to the end, but not all of it released by the merge (the run stopped first)
            if offsets.get(partition, -1) < end:
                offsets[partition] = end
        return offsets

    def commit(self, next_offsets: Mapping[int, int], *, retry_s: float = 30.0) -> None:
        """Commit ``next_offsets`` to the consumer group (after the checkpoint is durable).

        The trainer is not a group member (it assigns partitions itself), so the broker accepts its commit only
        while the group has no live members: a member that just left (tfio's consumer) is waited out.
        """
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        if not next_offsets:
            return
        offsets = [TopicPartition(self.topic, int(p), int(o)) for p, o in sorted(next_offsets.items())]
        deadline = time.monotonic() + retry_s
        # A member that just left, or a coordinator still loading after a broker restart: both pass.
        retriable = {KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS,
                     KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                     KafkaError.COORDINATOR_NOT_AVAILABLE}
        while True:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as exc:
                if exc.args[0].code() not in retriable or time.monotonic() > deadline:
                    raise
                log.info("offset commit refused (%s); retrying", exc.args[0].str())
                time.sleep(1.0)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
