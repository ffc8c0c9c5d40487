"""Mini-batches from tensorflow-io's ``KafkaBatchIODataset``, the seed's reader, for the trainer's ``--reader tfio``.

What it guarantees, and what it does not: the dataset follows the consumer group, not explicit offsets, and
librdkafka auto-commits what it fetched (possibly ahead of what was trained). So the reader commits the checkpoint's
offsets to the group before reading (tfio then starts exactly there) and, at the end of the stream, reports the
group position tfio reached as the next offset (:meth:`TfioReader.next_offsets_after`); the trainer commits it after
the checkpoint. Offsets are not visible per message: this reader reads until the stream timeout (no record or time
limit, no stop at the start's end offsets) and supports one-partition topics only. A crash mid-run is still safe
(the next run re-commits the checkpoint's offsets), but per-mini-batch history rows carry no offsets and are keyed
by run, so a retried run adds rows rather than replacing them.

Owns: turning the dataset's mini-batches into :class:`include.kafka.records.Records` (one per mini-batch) and
reading the group's position at the end. The dataset itself is built by :meth:`include.kafka.clients.KafkaClients.tfio_batch_dataset`.
Never decodes a value and never commits on its own initiative beyond the start position it is given.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping

from include.kafka.clients import KafkaClients
from include.kafka.reader import STOP_TIMEOUT
from include.kafka.records import NO_OFFSET, Records


class TfioReader:
    """The tensorflow-io reader of one partition of ``topic`` for consumer group ``group_id``.

    Args:
        clients: The project's Kafka client factory (builds the dataset and the position probe).
        topic: The observations topic (one partition).
        group_id: The trainer's consumer group: tfio reads from, and auto-commits to, its position.
        start: ``{partition: next offset}`` to start at (the checkpoint's).
        batch_messages: Messages per mini-batch (at most).
        stream_timeout_s: The stream ends after this long without a message.
        commit: Commits offsets to ``group_id``, e.g. :meth:`include.kafka.reader.BoundedReader.commit` (a
            non-member commit that waits out a member that just left).

    Attributes:
        stop_reason: ``timeout`` once the stream ended (tfio has no other end), None before.
        records: Messages delivered so far.
        next_offsets: The group's position tfio reached, once the stream ended; empty before.

    Raises:
        ValueError: ``start`` has more than one partition.
    """

    def __init__(self, clients: KafkaClients, topic: str, group_id: str, start: Mapping[int, int], *,
                 batch_messages: int, stream_timeout_s: float, commit: Callable[[Mapping[int, int]], None]) -> None:
        if len(start) != 1:
            raise ValueError("the tfio reader supports single-partition topics only; use the confluent reader")
        (self.partition,) = start
        self.clients, self.topic, self.group_id = clients, topic, group_id
        self.start = dict(start)
        self.batch_messages, self.stream_timeout_s = batch_messages, stream_timeout_s
        self._commit = commit
        self.stop_reason: str | None = None
        self.records = 0
        self.next_offsets: dict[int, int] = {}

    def fetches(self) -> Iterator[Records]:
        """Mini-batches, one :class:`Records` each, until the stream timeout; messages carry offset
        :data:`include.kafka.records.NO_OFFSET` (tfio does not expose offsets) and no timestamp."""
        # Start exactly at the checkpoint: tfio starts from the group's committed offset.
        self._commit(self.start)
        dataset = self.clients.tfio_batch_dataset(self.topic, self.group_id, batch_messages=self.batch_messages,
                                                  stream_timeout_s=self.stream_timeout_s)
        for mini in dataset:
            values = [v for v, _k in mini.batch(max(self.batch_messages, 1) * 100).take(1).as_numpy_iterator()]
            if not values:
                continue
            batch = [bytes(v) for v in values[0]]
            self.records += len(batch)
            yield Records.of(batch, [self.partition] * len(batch), [NO_OFFSET] * len(batch))
        # tfio read to the stream timeout, so the group's committed offset is the end of what it read.
        self.next_offsets = {self.partition: max(self._group_position(), self.start[self.partition])}
        self.stop_reason = STOP_TIMEOUT

    def next_offsets_after(self, trained: Mapping[int, int]) -> dict[int, int]:
        """The next offsets once the run is over: the group position tfio reached (messages carry no offsets, so
        ``trained``, the offsets the trainer counted, never moved)."""
        return {**trained, **self.next_offsets}

    def _group_position(self) -> int:
        from confluent_kafka import TopicPartition

        probe = self.clients.consumer(self.group_id, role="offsets")
        try:
            return probe.committed([TopicPartition(self.topic, self.partition)], timeout=30)[0].offset
        finally:
            probe.close()
