"""One landed file into Kafka, exactly once: one transaction per file, closed by a commit marker.

How exactly-once holds, per file:

1. The file is identified by the SHA-256 of its content. The ledger says whether that content was already
   committed to the topic; if so, nothing is produced again (rerun, backfill overlap).
2. Otherwise one Kafka transaction carries the whole file: its valid rows to the topic (key = the schema's key,
   timestamp = event time, headers ``source_file``, ``line``, ``schema``), its bad rows to the dead-letter topic,
   and last a commit marker in the control topic (:mod:`include.ingest.markers`). The transactional id derives
   from the hash, so a retry of the same file reuses it and ``init_transactions`` fences any zombie attempt and
   aborts its open transaction.
3. The window between the Kafka commit and the ledger write is closed by the marker: after ``init_transactions``
   the previous attempt is either committed (its marker is visible to a read_committed reader) or aborted (it is
   not). A retry that finds the marker records the ledger row from it and produces nothing.

A file dated before the topic's newest data is not produced: appended now it would put old observations after
newer ones in the stream the model learns from. It is recorded in the ledger as ``waiting_for_rebuild`` (status
``waiting_for_rebuild``), the topic is untouched, and a rebuild of the topic's next generation takes it
(:mod:`include.rebuild`).

A crash in the middle of a file leaves an open transaction that read_committed consumers never see and the next
attempt aborts. A file whose bad fraction exceeds the threshold, whose header does not match, or that changes
while being read is aborted whole: nothing of it is visible.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from include import faults
from include.ingest.errors import IngestError
from include.ingest.landing import HashingReader, as_path, content_sha256, file_date, open_binary
from include.ingest.ledger import WAITING, Ledger
from include.ingest.markers import control_topic, find_marker, transactional_id
from include.ingest.validate import HeaderError, RowError, iter_records, iter_rows
from include.kafka.clients import KafkaClients
from include.schema import CsvSchema
from include.settings import Settings

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1_000_000


@dataclass
class FileResult:
    file: str
    sha256: str
    status: str  # committed | skipped | recovered | empty | waiting_for_rebuild
    rows: int = 0
    bad: int = 0
    offsets: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0
    message: str | None = None  # the one line that says what happened, when it is not plain (a waiting file)
    recorded_before: bool = False  # a waiting file that was recorded as waiting by an earlier attempt

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Deliveries:
    """Delivery reports of one transaction: offsets per partition of the data topic, and errors.

    :attr:`callback` is the producer's ``on_delivery``: a plain closure, because it runs once per message
    (millions per file) and calling an instance's ``__call__`` costs noticeably more than calling a function.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.offsets: dict[int, list[int]] = {}
        self.errors: list[str] = []
        self.callback = self._make_callback()

    def _make_callback(self):
        topic, offsets, errors = self.topic, self.offsets, self.errors

        def on_delivery(err, msg) -> None:
            if err is not None:
                errors.append(str(err))
                return
            if msg.topic() != topic:
                return
            offset = msg.offset()
            span = offsets.get(msg.partition())
            if span is None:
                offsets[msg.partition()] = [offset, offset]
            elif offset > span[1]:  # span[0] <= span[1]: at most one of the two bounds moves
                span[1] = offset
            elif offset < span[0]:
                span[0] = offset

        return on_delivery

    def as_json(self) -> dict[str, list[int]]:
        return {str(p): span for p, span in sorted(self.offsets.items())}


@dataclass
class _Produced:
    """What the produce loop sent of one file."""

    valid: int = 0
    bad: int = 0
    errors: list[RowError] = field(default_factory=list)
    header_error: str | None = None


def _produce_when_room(producer, topic: str, value, key, timestamp: int, headers) -> None:
    """Produce, waiting for the local queue to drain when it is full (BufferError)."""
    while True:
        try:
            producer.produce(topic, value, key, timestamp=timestamp, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)


def _abort_quietly(producer) -> None:
    """Abort the open transaction on an unexpected error; the broker would abort it at its timeout anyway."""
    try:
        producer.abort_transaction(30)
    except Exception as exc:  # noqa: BLE001 - the original error is the one to report
        log.warning("could not abort the transaction: %s", exc)


def _rescan_errors(path, schema: CsvSchema, file_name: str, max_line_bytes: int) -> Iterable[RowError]:
    with open_binary(path) as handle:
        for item in iter_rows(handle, schema, file_name=file_name, max_line_bytes=max_line_bytes):
            if isinstance(item, RowError):
                yield item


def _dlq_value(err: RowError, schema: CsvSchema) -> bytes:
    return json.dumps({**err.as_dict(), "schema": schema.id}).encode()


def _produce_rows(producer, reader: HashingReader, name: str, schema: CsvSchema, topic: str, dlq_topic: str,
                  max_line_bytes: int) -> _Produced:
    """Validate the file and produce it: valid rows to ``topic``, bad ones to ``dlq_topic``. The hot loop."""
    out = _Produced()
    produce, poll = producer.produce, producer.poll
    file_header = ("source_file", name.encode())
    schema_header = ("schema", schema.id.encode())
    valid = 0
    try:
        # iter_records: a valid row is a plain (line, text, key, event_time_ms) tuple, cheaper than a ValidRow.
        for item in iter_records(reader, schema, file_name=name, max_line_bytes=max_line_bytes):
            if item.__class__ is tuple:
                line, text, key, ts = item
                headers = [file_header, ("line", b"%d" % line), schema_header]
                ts = ts or 0  # 0: no event time (headerless schemas); the producer stamps it
                try:
                    # All positional, in the C signature's order (topic, value, key, partition, callback,
                    # on_delivery, timestamp, headers): keywords cost a dict per message. -1 lets the partitioner
                    # choose; None keeps the producer's on_delivery. A reordered signature would fail loudly (None
                    # is not a timestamp), not silently.
                    produce(topic, text, key, -1, None, None, ts, headers)
                except BufferError:
                    _produce_when_room(producer, topic, text, key, ts, headers)
                valid += 1
                if not valid & 0x3FF:
                    poll(0)
                    if not valid & 0xFFFF:
                        faults.reached("ingest_mid_file")
            else:
                out.bad += 1
                out.errors.append(item)
                _produce_when_room(producer, dlq_topic, _dlq_value(item, schema), name, 0,
                                   [file_header, ("line", b"%d" % item.line), schema_header])
    except HeaderError as exc:
        out.header_error = str(exc)
    out.valid = valid
    return out


def _rejection(name: str, schema: CsvSchema, produced: _Produced, digest: str, sha: str,
               max_bad_fraction: float) -> str | None:
    """Why the file must be aborted whole, or None."""
    total = produced.valid + produced.bad
    if produced.header_error is not None:
        return f"{name}: header does not match schema {schema.id}: {produced.header_error}"
    if digest != sha:
        return f"{name}: the file changed while it was being read; it will be ingested when it is stable"
    if total and produced.bad / total > max_bad_fraction:
        first = "; ".join(str(e) for e in produced.errors[:3])
        return (f"{name}: {produced.bad} of {total} rows are bad ({produced.bad / total:.2%} > threshold "
                f"{max_bad_fraction:.2%}); nothing from this file was produced. First: {first}")
    return None


def ingest_file(path, *, settings: Settings, schema: CsvSchema, clients: KafkaClients, sessions,
                dag_run_id: str | None = None, max_line_bytes: int = MAX_LINE_BYTES,
                older: str = "wait") -> FileResult:
    """Ingest one file exactly once (see the module docstring).

    Args:
        older: What to do with a file dated before the topic's newest data: ``wait`` (record it as waiting for a
            rebuild; the live topic) or ``refuse`` (an IngestError; a rebuild's generation, which never takes one).

    Raises:
        IngestError: The file must be rejected (nothing of it was produced), or Kafka failed.
    """
    started = time.perf_counter()
    path = as_path(path)
    name = str(path)
    ledger = Ledger(sessions, settings.topic)
    sha, size = content_sha256(path)
    previous = ledger.get(sha)
    if previous is not None and previous.status == "committed":
        log.info("%s: already ingested (sha256 %s, %d rows, as %s); skipping", name, sha[:12], previous.rows_valid,
                 previous.file_name)
        return FileResult(name, sha, "skipped", previous.rows_valid, previous.rows_bad, previous.offsets)

    day = file_date(Path(name).name)
    tx_id = transactional_id(settings.topic, sha)
    row = dict(content_sha256=sha, file_name=name, file_date=day.isoformat() if day else None, size_bytes=size,
               schema_id=schema.id, transactional_id=tx_id, dag_run_id=dag_run_id)
    if previous is not None and previous.status == WAITING:
        return _waiting(name, sha, day, previous.message, started, again=True)
    # A pending row is an attempt that may have committed to Kafka already: its marker decides first (below).
    if previous is None or previous.status != "pending":
        waiting = _wait_if_older(ledger, row, name, sha, day, settings.topic, older, started)
        if waiting is not None:
            return waiting
    if previous is None:
        ledger.put(**row, status="pending", attempts=0, rows_valid=0, rows_bad=0, offsets={})
    ledger.count_attempt(sha)
    if size == 0:
        ledger.put(**row, status="committed", rows_valid=0, rows_bad=0, offsets={}, message="empty file")
        log.info("%s: empty file, 0 rows", name)
        return FileResult(name, sha, "empty", seconds=time.perf_counter() - started)

    deliveries = _Deliveries(settings.topic)
    producer = clients.producer(transactional_id=tx_id, on_delivery=deliveries.callback)
    # Fences an earlier attempt of this file (same transactional id) and completes or aborts its transaction.
    producer.init_transactions(60)
    marker = find_marker(clients, settings.topic, sha)
    if marker is not None:
        log.warning("%s: an earlier attempt committed to Kafka but not to the ledger; recording it now", name)
        ledger.quarantine(sha, name, _rescan_errors(path, schema, name, max_line_bytes))
        ledger.put(**row, status="committed", rows_valid=marker["rows"], rows_bad=marker["bad"],
                   offsets=marker["offsets"], message="recovered from the Kafka commit marker")
        return FileResult(name, sha, "recovered", marker["rows"], marker["bad"], marker["offsets"],
                          time.perf_counter() - started)

    if previous is not None and previous.status == "pending":
        waiting = _wait_if_older(ledger, row, name, sha, day, settings.topic, older, started)
        if waiting is not None:
            return waiting
    produced, offsets = _transact(producer, deliveries, path, name, sha, schema, settings, ledger, row, max_line_bytes)
    faults.reached("ingest_after_commit")
    ledger.quarantine(sha, name, produced.errors)
    ledger.put(**row, status="committed", rows_valid=produced.valid, rows_bad=produced.bad, offsets=offsets,
               message=None)
    seconds = time.perf_counter() - started
    log.info("%s: %d rows committed to %s (%d bad -> %s) in %.2fs (%.0f rows/s)", name, produced.valid,
             settings.topic, produced.bad, settings.dlq_topic, seconds, produced.valid / seconds if seconds else 0.0)
    return FileResult(name, sha, "committed", produced.valid, produced.bad, offsets, seconds)


def _wait_if_older(ledger: Ledger, row: dict[str, Any], name: str, sha: str, day, topic: str, older: str,
                   started: float) -> FileResult | None:
    """Record the file as waiting for a rebuild when the topic holds newer data (None: it may go in)."""
    newest = ledger.newer_data_than(day)
    if newest is None:
        return None
    reason = (f"{name}: dated {day.isoformat()}, older than the newest data in {topic} ({newest}): waiting for a "
              "rebuild; the live topic and model are unchanged")
    if older != "wait":
        raise IngestError(f"{name}: dated {day.isoformat()}, older than the newest data in {topic} ({newest}): it "
                          "cannot go behind newer data")
    ledger.put(**row, status=WAITING, rows_valid=0, rows_bad=0, offsets={}, message=reason)
    return _waiting(name, sha, day, reason, started, again=False)


def _waiting(name: str, sha: str, day, message: str | None, started: float, *, again: bool) -> FileResult:
    text = message or f"{name}: dated {day}, waiting for a rebuild"
    log.warning("%s%s", text, " (recorded already)" if again else "")
    return FileResult(name, sha, WAITING, seconds=time.perf_counter() - started, message=text, recorded_before=again)


def _transact(producer, deliveries: _Deliveries, path, name: str, sha: str, schema: CsvSchema, settings: Settings,
              ledger: Ledger, row: dict[str, Any], max_line_bytes: int) -> tuple[_Produced, dict[str, list[int]]]:
    """The transaction: rows, marker, commit; or abort, record the rejection and raise IngestError."""
    from confluent_kafka import KafkaException

    producer.begin_transaction()
    reader = HashingReader(open_binary(path))
    try:
        produced = _produce_rows(producer, reader, name, schema, settings.topic, settings.dlq_topic, max_line_bytes)
        # The whole file was read; it must be the file that was hashed.
        reason = _rejection(name, schema, produced, reader.read_to_end(), sha, settings.max_bad_fraction)
        if reason is not None:
            producer.abort_transaction(60)
            ledger.quarantine(sha, name, produced.errors)
            ledger.put(**row, status="rejected", rows_valid=0, rows_bad=produced.bad, offsets={}, message=reason)
            raise IngestError(reason)
        if producer.flush(120) != 0 or deliveries.errors:
            producer.abort_transaction(60)
            raise IngestError(f"{name}: delivery failed: {deliveries.errors[:3]}")
        offsets = deliveries.as_json()
        marker = {"file": name, "rows": produced.valid, "bad": produced.bad, "offsets": offsets, "schema": schema.id,
                  "topic": settings.topic}
        producer.produce(control_topic(settings.topic), json.dumps(marker).encode(), sha.encode())
        faults.reached("ingest_before_commit")
        producer.commit_transaction(120)
    except KafkaException as exc:
        _abort_quietly(producer)
        raise IngestError(f"{name}: Kafka transaction failed: {exc}") from exc
    except IngestError:
        raise
    except BaseException:
        _abort_quietly(producer)
        raise
    finally:
        reader.close()
    return produced, offsets
