"""Streaming scoring, exactly once: requests topic in, ``<requests topic>.predictions`` out, in Kafka transactions.

A consume-transform-produce loop. Each poll batch of requests (CSV rows in the schema's order, the label optional)
is decoded at once, scored by one model version, and answered inside one Kafka transaction that also carries the
consumer's next offsets (``send_offsets_to_transaction``) for the group ``settings.scorer_group``. The answers and
the offsets commit together or not at all, so:

* a crash before the commit leaves an open transaction that read_committed readers never see; the restarted scorer
  (same transactional id) aborts it in ``init_transactions`` and starts again at the committed offsets;
* a crash after the commit leaves the offsets moved past the answered requests: none is answered twice.

The consumer assigns its partitions itself (no group membership, no rebalances), so zombie fencing is by the
transactional id, stable per requests topic and partition set (``scorer.<group>.<topic>.<partitions>``): run one
scorer for all partitions, or several on disjoint ``partitions``. A transaction that must be aborted (the EOS
example's ``txn_requires_abort``) is aborted and the consumer rewound to the committed offsets; a fatal error
(fenced by a newer instance) ends the run, and a restart resumes. The model is the champion, read from the
registry before each transaction (a promotion or rollback takes effect at the next one), or a fixed version.

Bounded by default (stops at the end offsets seen at start, after ``stream_timeout_s`` without a request, or at a
record/time limit); ``follow`` keeps running until the limits or :attr:`StreamScorer.stop` is set. This module
never trains and never changes the registry.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from include import faults
from include.kafka.clients import KafkaClients
from include.kafka.reader import OffsetError
from include.schema import CsvSchema, load_schema
from include.serving.answers import encode_answers, predictions_topic
from include.serving.champion import ModelChoice
from include.serving.requests import decode_requests
from include.settings import Settings, get_settings

log = logging.getLogger(__name__)

STOP_END_OFFSETS = "end_offsets"
STOP_NOTHING_NEW = "nothing_new"
STOP_NO_TOPIC = "no_requests_topic"
STOP_TIMEOUT = "timeout"
STOP_MAX_RECORDS = "max_records"
STOP_MAX_SECONDS = "max_seconds"
STOP_REQUESTED = "stopped"


@dataclass(frozen=True)
class ScoreOptions:
    """What one scorer run does.

    Attributes:
        model_name: The model to score with.
        version: A fixed version; None follows the champion.
        follow: Keep running past the end offsets seen at start and past quiet periods.
        max_records: Stop after this many requests.
        max_seconds: Stop after this long.
        partitions: Score only these partitions of the requests topic (None: all of them).
        batch_messages: The most requests one transaction carries.
        stream_timeout_s: Bounded runs stop after this long without a request (None: the setting).
    """

    model_name: str = "default"
    version: int | None = None
    follow: bool = False
    max_records: int | None = None
    max_seconds: float | None = None
    partitions: tuple[int, ...] | None = None
    batch_messages: int = 10_000
    stream_timeout_s: float | None = None


@dataclass
class ScoreSummary:
    """What a run did (printed as JSON by the command line, returned by the DAG task)."""

    requests_topic: str
    predictions_topic: str
    group: str
    transactional_id: str
    model_name: str
    stop_reason: str | None = None
    records: int = 0
    scored: int = 0
    refused: int = 0
    records_per_s: float = 0.0
    seconds: float = 0.0
    transactions: int = 0
    aborted: int = 0
    versions: dict[str, int] = field(default_factory=dict)  # version -> requests it answered
    offsets_from: dict[str, int] = field(default_factory=dict)
    offsets_to: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def transactional_id(settings: Settings, partitions: tuple[int, ...] | None) -> str:
    """The scorer's transactional id: the same for every run on the same requests topic and partition set."""
    spec = "all" if partitions is None else "p" + "-".join(str(p) for p in sorted(set(partitions)))
    return f"scorer.{settings.scorer_group}.{settings.requests_topic}.{spec}"


def score_requests(settings: Settings | None = None, options: ScoreOptions | None = None, *,
                   use_airflow: bool = False, clients: KafkaClients | None = None,
                   stop: threading.Event | None = None) -> ScoreSummary:
    """Score the requests topic once (bounded) or until stopped (``options.follow``); see the module docstring."""
    from include.lifecycle.registry import Registry

    settings = settings or get_settings()
    options = options or ScoreOptions()
    clients = clients or KafkaClients(settings, use_airflow=use_airflow)
    choice = ModelChoice(Registry(settings), options.model_name, options.version)
    scorer = StreamScorer(settings, options, clients, load_schema(settings.schema_name), choice, stop=stop)
    try:
        return scorer.run()
    finally:
        scorer.close()


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT/SIGTERM set instead of interrupting: the scorer finishes its transaction and stops.

    Off the main thread (where handlers cannot be installed) the event is only set by its owner.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StreamScorer:
    """One scorer run: :meth:`run` opens the clients, loops over transactions, and returns the summary."""

    def __init__(self, settings: Settings, options: ScoreOptions, clients: KafkaClients, schema: CsvSchema,
                 choice: ModelChoice, *, stop: threading.Event | None = None) -> None:
        self.settings, self.options, self.clients, self.schema, self.choice = settings, options, clients, schema, choice
        self.stop = stop or threading.Event()
        self.topic = settings.requests_topic
        self.out_topic = predictions_topic(self.topic)
        self.timeout_s = options.stream_timeout_s if options.stream_timeout_s is not None else settings.stream_timeout_s
        self.summary = ScoreSummary(self.topic, self.out_topic, settings.scorer_group,
                                    transactional_id(settings, options.partitions), options.model_name)
        self.consumer: Any = None
        self.producer: Any = None
        self.start: dict[int, int] = {}
        self.end: dict[int, int] = {}
        self.todo: set[int] = set()
        self.same_partition = False

    # -- set-up ----------------------------------------------------------------------------------------------
    def _open(self) -> bool:
        """Clients, fencing, start and end offsets. False when there is no requests topic yet."""
        from confluent_kafka import TopicPartition

        self.consumer = self.clients.consumer(self.settings.scorer_group, role="transform")
        meta = self.consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
        if meta is None or meta.error is not None:
            log.warning("requests topic %s does not exist yet: nothing to score", self.topic)
            return False
        partitions = sorted(meta.partitions)
        if self.options.partitions is not None:
            unknown = sorted(set(self.options.partitions) - set(partitions))
            if unknown:
                raise OffsetError(f"requests topic {self.topic!r} has no partition(s) {unknown} (it has {partitions})")
            partitions = sorted(set(self.options.partitions))
        self.clients.ensure_topic(self.out_topic, partitions=len(meta.partitions),
                                  retention_ms=self.settings.topic_retention_ms)
        out_meta = self.consumer.list_topics(self.out_topic, timeout=30).topics[self.out_topic]
        # Answer in the request's partition when the predictions topic has it (it does when the scorer made it).
        self.same_partition = len(out_meta.partitions) >= len(meta.partitions)
        self.producer = self.clients.transform_producer(self.summary.transactional_id)
        # Fences an earlier instance with this id and finishes its open transaction, so the committed offsets
        # read next are final.
        self.producer.init_transactions(60)
        committed = self.consumer.committed([TopicPartition(self.topic, p) for p in partitions], timeout=30)
        for tp in committed:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, tp.partition), timeout=30,
                                                            cached=False)
            start = tp.offset if tp.offset >= 0 else low
            if start < low:
                raise OffsetError(f"{self.topic}[{tp.partition}]: requests {start}..{low - 1} were deleted by retention "
                                  f"before they were scored; move group {self.settings.scorer_group!r} on deliberately")
            self.start[tp.partition], self.end[tp.partition] = start, high
        self.summary.offsets_from = {str(p): o for p, o in sorted(self.start.items())}
        self.todo = set(partitions) if self.options.follow else {p for p in partitions if self.start[p] < self.end[p]}
        if self.todo:
            self.consumer.assign([TopicPartition(self.topic, p, self.start[p]) for p in sorted(self.todo)])
        return True

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        if self.producer is not None:
            self.producer.flush(10)
            self.producer = None

    # -- the loop --------------------------------------------------------------------------------------------
    def run(self) -> ScoreSummary:
        started = time.monotonic()
        if not self._open():
            return self._finish(STOP_NO_TOPIC, started)
        if not self.todo:
            return self._finish(STOP_NOTHING_NEW, started)
        last_request = last_log = time.monotonic()
        while True:
            reason, want = self._limits(started)
            if reason is not None:
                return self._finish(reason, started)
            batch = self._accept(self.consumer.consume(num_messages=want, timeout=0.5))
            now = time.monotonic()
            if batch:
                last_request = now
                self._transact(batch)
            elif not self.options.follow and now - last_request >= self.timeout_s:
                return self._finish(STOP_TIMEOUT, started)
            if now - last_log >= 5.0:
                last_log = now
                log.info("scored %d requests (%d refused) in %d transactions, %.0f requests/s",
                         self.summary.records, self.summary.refused, self.summary.transactions,
                         self.summary.records / max(now - started, 1e-9))

    def _limits(self, started: float) -> tuple[str | None, int]:
        """Why to stop now (or None) and how many requests the next poll may take."""
        o = self.options
        if self.stop.is_set():
            return STOP_REQUESTED, 0
        if not o.follow and not self.todo:
            return STOP_END_OFFSETS, 0
        if o.max_seconds is not None and time.monotonic() - started >= o.max_seconds:
            return STOP_MAX_SECONDS, 0
        want = o.batch_messages
        if o.max_records is not None:
            want = min(want, o.max_records - self.summary.records)
            if want <= 0:
                return STOP_MAX_RECORDS, 0
        return None, want

    def _accept(self, polled: list[Any]) -> list[Any]:
        """The data messages of a poll; partitions read to the end seen at start leave :attr:`todo`.

        Messages past that end are scored too (the consumer's position has passed them): a bounded run answers at
        least everything that was there when it started.
        """
        from confluent_kafka import KafkaError

        batch = []
        for msg in polled:
            err = msg.error()
            if err is None:
                batch.append(msg)
                if msg.offset() + 1 >= self.end[msg.partition()]:
                    self.todo.discard(msg.partition())
            elif err.code() == KafkaError._PARTITION_EOF:
                if msg.offset() >= self.end[msg.partition()] and not self.options.follow:
                    self.todo.discard(msg.partition())
            elif err.code() == KafkaError._AUTO_OFFSET_RESET or "out of range" in str(err).lower():
                raise OffsetError(f"{self.topic}[{msg.partition()}]: {err}; requests fell out of the log unscored")
            elif err.fatal():
                raise RuntimeError(f"consuming {self.topic}: {err}")
            else:
                log.warning("consuming %s: %s (retrying)", self.topic, err)
        return batch

    def _finish(self, reason: str, started: float) -> ScoreSummary:
        s = self.summary
        s.stop_reason = reason
        s.seconds = round(time.monotonic() - started, 3)
        s.records_per_s = round(s.records / s.seconds, 1) if s.seconds > 0 else 0.0
        log.info("scorer stopped (%s): %d requests, %d refused, %d transactions (%d aborted), versions %s, "
                 "%.0f requests/s", reason, s.records, s.refused, s.transactions, s.aborted, s.versions,
                 s.records_per_s)
        return s

    # -- one transaction -------------------------------------------------------------------------------------
    def _transact(self, batch: list[Any]) -> None:
        """Score ``batch`` and answer it, with the consumer's next offsets, in one transaction."""
        from confluent_kafka import KafkaException

        model = self.choice.current()  # a promotion or rollback takes effect here, between transactions
        partitions = [m.partition() for m in batch]
        offsets = [m.offset() for m in batch]
        requests = decode_requests(self.schema, [m.value() for m in batch])
        answers = encode_answers(self.topic, self.choice.lineage, model.version, partitions, offsets, requests,
                                 model.predict(requests.x))
        try:
            self.producer.begin_transaction()
            self._produce(batch, partitions, answers)
            faults.reached("scorer_after_produce")
            positions = [tp for tp in self.consumer.position(self.consumer.assignment()) if tp.offset >= 0]
            self.producer.send_offsets_to_transaction(positions, self.consumer.consumer_group_metadata(), 60)
            faults.reached("scorer_before_commit")
            self._commit()
        except KafkaException as exc:
            self._recover(exc)
            return
        except BaseException:
            self._abort_quietly()
            raise
        faults.reached("scorer_after_commit")
        s = self.summary
        s.records += len(batch)
        s.refused += len(requests.errors)
        s.scored += len(batch) - len(requests.errors)
        s.transactions += 1
        s.versions[str(model.version)] = s.versions.get(str(model.version), 0) + len(batch)
        s.offsets_to.update({str(tp.partition): tp.offset for tp in positions})

    def _produce(self, batch: list[Any], partitions: list[int], answers: list[bytes]) -> None:
        produce, out = self.producer.produce, self.out_topic
        same = self.same_partition
        for msg, partition, value in zip(batch, partitions, answers):
            target = partition if same else -1
            while True:
                try:
                    # Positional, in the C signature's order (topic, value, key, partition, callback, on_delivery,
                    # timestamp, headers), as ingest does: keywords cost a dict per message.
                    produce(out, value, msg.key(), target, None, None, 0, None)
                    break
                except BufferError:
                    self.producer.poll(0.05)

    def _commit(self) -> None:
        """Commit, retrying what the client says is retriable (the EOS example's rule)."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + 120
        while True:
            try:
                self.producer.commit_transaction(60)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable() or time.monotonic() > deadline:
                    raise
                log.info("transaction commit failed (%s); retrying", exc.args[0].str())

    def _recover(self, exc: Exception) -> None:
        """After a failed transaction: abort and rewind when the client allows it, else the run ends."""
        err = exc.args[0]
        if err.fatal() or not err.txn_requires_abort():
            raise exc
        log.warning("transaction aborted (%s); rewinding to the committed offsets", err.str())
        self.producer.abort_transaction(60)
        self.summary.aborted += 1
        self._rewind()

    def _rewind(self) -> None:
        """Back to the group's committed offsets (what the aborted transaction would have moved)."""
        from confluent_kafka import TopicPartition

        assigned = [TopicPartition(self.topic, tp.partition) for tp in self.consumer.assignment()]
        positions = [TopicPartition(self.topic, tp.partition, tp.offset if tp.offset >= 0 else self.start[tp.partition])
                     for tp in self.consumer.committed(assigned, timeout=30)]
        self.consumer.assign(positions)
        if not self.options.follow:
            self.todo = {tp.partition for tp in positions if tp.offset < self.end[tp.partition]}

    def _abort_quietly(self) -> None:
        try:
            self.producer.abort_transaction(30)
        except Exception as exc:  # noqa: BLE001 - the original error is the one to report
            log.warning("could not abort the transaction: %s", exc)
