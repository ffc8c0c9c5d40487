"""Ingest landed CSV files into Kafka: validated, each valid row exactly once.

How exactly-once holds, per file:

1. The file is identified by the SHA-256 of its content. The ledger (``ingest_files``) says whether that
   content was already committed to the topic; if so, nothing is produced again (rerun, backfill overlap).
2. Otherwise one Kafka transaction carries the whole file: its valid rows to the topic, its bad rows to the
   dead-letter topic, and last a *commit marker* (key = the file's hash) to the small control topic
   ``<topic>.ingest-ledger``. The transactional id is derived from the hash, so a retry of the same file
   reuses it and ``init_transactions`` fences any zombie attempt and aborts its open transaction.
3. The window between the Kafka commit and the ledger write is closed by the marker: after
   ``init_transactions`` the previous attempt is either committed (its marker is visible to a
   read_committed reader) or aborted (it is not). A retry that finds the marker records the ledger row
   from it and produces nothing.

A crash in the middle of a file leaves an open transaction that read_committed consumers never see and
the next attempt aborts. A file whose bad fraction exceeds the threshold, whose header does not match, or
that changes while being read is aborted whole: nothing of it is visible.

This module never decides anything from the wall clock: which files belong to a run comes from the
dates in their names and the run's data interval.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Mapping

from include import faults
from include.history import db
from include.kafka.clients import base_config, ensure_topic, producer_config, redact
from include.schema import CsvSchema, load_schema
from include.settings import Settings, get_settings
from include.ingest.validate import HeaderError, RowError, iter_records, iter_rows

log = logging.getLogger(__name__)

DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
HASH_CHUNK = 1 << 20
QUARANTINE_BATCH = 2_000
MARKER_WAIT_S = 120.0


class IngestError(RuntimeError):
    """A file could not be ingested; the message names the file and why. Nothing of it was produced."""


@dataclass
class FileResult:
    file: str
    sha256: str
    status: str  # committed | skipped | recovered | empty
    rows: int = 0
    bad: int = 0
    offsets: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IntervalResult:
    topic: str
    interval: tuple[str | None, str | None]
    files: list[FileResult] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files if f.status in ("committed", "recovered"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "interval": list(self.interval),
            "files": [f.as_dict() for f in self.files],
            "rows_new": self.rows,
            "rows_bad": sum(f.bad for f in self.files if f.status in ("committed", "recovered")),
            "files_new": sum(f.status in ("committed", "recovered") for f in self.files),
            "files_skipped": sum(f.status == "skipped" for f in self.files),
        }


# ---------------------------------------------------------------------------------------------------------
# Files and where they are


def _is_url(location: str) -> bool:
    return "://" in location


def _path(location: str):
    """A local Path, or an Airflow ObjectStoragePath for URLs (s3://, gs://, file://...)."""
    if _is_url(location):
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(location)
    return Path(location)


def file_date(name: str) -> date | None:
    match = DATE_IN_NAME.search(name)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def list_interval_files(landing: str, start: datetime | None, end: datetime | None) -> list:
    """CSV files in ``landing`` whose name's date falls in [start, end), in date then name order.

    With no interval (a manual run), every dated file is returned; already ingested ones are skipped later
    by the ledger, so this is safe.
    """
    root = _path(landing)
    if not root.exists():
        return []
    found = []
    for entry in root.iterdir():
        if not entry.name.endswith(".csv") or entry.name.startswith("."):
            continue
        day = file_date(entry.name)
        if day is None:
            continue
        if start is not None and end is not None and start != end:
            # A file dated D holds observations of [D 00:00, D+1 00:00) UTC; it belongs to the interval
            # that contains its start.
            if not (start <= datetime(day.year, day.month, day.day, tzinfo=timezone.utc) < end):
                continue
        found.append((day, entry.name, entry))
    return [entry for _, _, entry in sorted(found, key=lambda t: (t[0], t[1]))]


def _open_binary(path) -> BinaryIO:
    return path.open("rb")


def content_sha256(path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with _open_binary(path) as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class _HashingReader:
    """Wraps a binary file: hashes what is read, so a file that changes while being read is caught."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        return data

    def readinto(self, buffer) -> int:  # pragma: no cover - io helpers may prefer it
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()


# ---------------------------------------------------------------------------------------------------------
# The control topic of commit markers


def control_topic(topic: str) -> str:
    return f"{topic}.ingest-ledger"


def transactional_id(topic: str, sha: str) -> str:
    return f"retrain-ingest-{topic}-{sha[:40]}"


def find_marker(base: Mapping[str, Any], topic: str, sha: str, timeout: float = MARKER_WAIT_S) -> dict | None:
    """The committed marker of file ``sha`` in the control topic, or None.

    Reads read_committed up to the last stable offset, and insists that it equals the high watermark: a
    marker behind another file's still-open transaction would be invisible, and "not found" must mean
    "not committed".
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    ctl = control_topic(topic)
    consumer = Consumer(
        {
            **base,
            "group.id": "retrain-ingest-marker-reader",
            "fetch.wait.max.ms": 10,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    deadline = time.monotonic() + timeout
    try:
        metadata = consumer.list_topics(ctl, timeout=30)
        partitions = sorted(metadata.topics[ctl].partitions)
        while True:
            found = None
            consumer.assign([TopicPartition(ctl, p, 0) for p in partitions])
            pending = set(partitions)
            while pending:
                msg = consumer.poll(1.0)
                if msg is None:
                    if time.monotonic() > deadline:
                        raise IngestError(f"timed out reading the ingest control topic {ctl}")
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                        continue
                    raise IngestError(f"reading {ctl}: {msg.error()}")
                if msg.key() == sha.encode():
                    found = json.loads(msg.value())
            stable = True
            for p in partitions:
                position = consumer.position([TopicPartition(ctl, p)])[0].offset
                _, high = consumer.get_watermark_offsets(TopicPartition(ctl, p), timeout=30, cached=False)
                if position >= 0 and position < high:
                    stable = False
            if stable or found is not None:
                return found
            if time.monotonic() > deadline:
                raise IngestError(f"another ingest transaction on {ctl} stayed open for {timeout:.0f}s; retry later")
            time.sleep(0.5)
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------------------
# One file


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

    def __call__(self, err, msg) -> None:
        self.callback(err, msg)

    def as_json(self) -> dict[str, list[int]]:
        return {str(p): span for p, span in sorted(self.offsets.items())}


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


def _ledger_get(sessions, topic: str, sha: str) -> db.IngestedFile | None:
    from sqlalchemy import select

    with sessions() as session:
        return session.scalars(
            select(db.IngestedFile).where(db.IngestedFile.topic == topic, db.IngestedFile.content_sha256 == sha)
        ).first()


def _refuse_out_of_order(sessions, topic: str, name: str, day: date | None) -> None:
    """Refuse a file dated before data already in the topic: it would put old observations after newer ones.

    The model learns the stream in offset order, so a late week would be learned as if it came after the
    newer ones. Retraining from scratch (a new topic and model name) is the deliberate way to include it.
    """
    from sqlalchemy import func, select

    if day is None:
        return
    with sessions() as session:
        newest = session.scalar(
            select(func.max(db.IngestedFile.file_date)).where(
                db.IngestedFile.topic == topic, db.IngestedFile.status == "committed", db.IngestedFile.rows_valid > 0
            )
        )
    if newest is not None and day.isoformat() < newest:
        raise IngestError(
            f"{name}: dated {day.isoformat()}, older than data already ingested into {topic} (newest {newest}); "
            "ingesting it now would mix time orders in the stream the model learns from. To include it, retrain "
            "from scratch: ingest all files into a new topic (RETRAIN_TOPIC) and train a new model name."
        )


def _ledger_put(sessions, **row: Any) -> None:
    row.setdefault("updated_at", db.utcnow())
    with sessions.begin() as session:
        db.upsert(session, db.IngestedFile, [row], keys=("topic", "content_sha256"))


def _ledger_attempt(sessions, topic: str, sha: str) -> int:
    from sqlalchemy import update

    with sessions.begin() as session:
        session.execute(
            update(db.IngestedFile)
            .where(db.IngestedFile.topic == topic, db.IngestedFile.content_sha256 == sha)
            .values(attempts=db.IngestedFile.attempts + 1, updated_at=db.utcnow())
        )
    row = _ledger_get(sessions, topic, sha)
    return row.attempts if row else 0


def _quarantine(sessions, topic: str, sha: str, file_name: str, errors: Iterable[RowError]) -> None:
    batch: list[dict] = []

    def flush() -> None:
        if batch:
            with sessions.begin() as session:
                db.upsert(session, db.QuarantinedRow, batch, keys=("content_sha256", "line"))
            batch.clear()

    for err in errors:
        batch.append(
            {"topic": topic, "content_sha256": sha, "file_name": file_name, "line": err.line,
             "field": err.field, "reason": err.reason, "raw": err.raw}
        )
        if len(batch) >= QUARANTINE_BATCH:
            flush()
    flush()


def _rescan_errors(path, schema: CsvSchema, file_name: str, max_line_bytes: int) -> Iterable[RowError]:
    with _open_binary(path) as handle:
        for item in iter_rows(handle, schema, file_name=file_name, max_line_bytes=max_line_bytes):
            if isinstance(item, RowError):
                yield item


def _dlq_value(err: RowError, schema: CsvSchema) -> bytes:
    return json.dumps({**err.as_dict(), "schema": schema.id}).encode()


def ingest_file(
    path,
    *,
    settings: Settings,
    schema: CsvSchema,
    base: Mapping[str, Any],
    sessions,
    dag_run_id: str | None = None,
    max_line_bytes: int = 1_000_000,
) -> FileResult:
    """Ingest one file exactly once. Raises :class:`IngestError` (nothing produced) when it must be rejected."""
    started = time.perf_counter()
    if isinstance(path, str):
        path = _path(path)
    name = str(path)
    topic = settings.topic
    sha, size = content_sha256(path)
    previous = _ledger_get(sessions, topic, sha)
    if previous is not None and previous.status == "committed":
        log.info("%s: already ingested (sha256 %s, %d rows, as %s); skipping", name, sha[:12], previous.rows_valid, previous.file_name)
        return FileResult(name, sha, "skipped", previous.rows_valid, previous.rows_bad, previous.offsets)

    day = file_date(Path(name).name)
    _refuse_out_of_order(sessions, topic, name, day)
    tx_id = transactional_id(topic, sha)
    ledger_row = dict(
        topic=topic, content_sha256=sha, file_name=name, file_date=day.isoformat() if day else None,
        size_bytes=size, schema_id=schema.id, transactional_id=tx_id, dag_run_id=dag_run_id,
    )
    if previous is None:
        _ledger_put(sessions, **ledger_row, status="pending", attempts=0, rows_valid=0, rows_bad=0, offsets={})
    _ledger_attempt(sessions, topic, sha)

    if size == 0:
        _ledger_put(sessions, **ledger_row, status="committed", rows_valid=0, rows_bad=0, offsets={}, message="empty file")
        log.info("%s: empty file, 0 rows", name)
        return FileResult(name, sha, "empty", seconds=time.perf_counter() - started)

    from confluent_kafka import KafkaException, Producer

    deliveries = _Deliveries(topic)
    producer = Producer({**producer_config(base, transactional_id=tx_id), "on_delivery": deliveries.callback})
    # Fences an earlier attempt of this file (same transactional id) and completes or aborts its transaction.
    producer.init_transactions(60)

    marker = find_marker(base, topic, sha)
    if marker is not None:
        log.warning("%s: an earlier attempt committed to Kafka but not to the ledger; recording it now", name)
        _quarantine(sessions, topic, sha, name, _rescan_errors(path, schema, name, max_line_bytes))
        _ledger_put(sessions, **ledger_row, status="committed", rows_valid=marker["rows"], rows_bad=marker["bad"],
                    offsets=marker["offsets"], message="recovered from the Kafka commit marker")
        return FileResult(name, sha, "recovered", marker["rows"], marker["bad"], marker["offsets"],
                          time.perf_counter() - started)

    producer.begin_transaction()
    valid = bad = 0
    errors: list[RowError] = []
    header_error: str | None = None
    reader = _HashingReader(_open_binary(path))
    try:
        produce = producer.produce
        poll = producer.poll
        data_topic, dlq_topic = topic, settings.dlq_topic
        file_header = ("source_file", name.encode())
        schema_header = ("schema", schema.id.encode())
        try:
            # iter_records: a valid row is a plain (line, text, key, event_time_ms) tuple, cheaper than a ValidRow.
            for item in iter_records(reader, schema, file_name=name, max_line_bytes=max_line_bytes):
                if item.__class__ is tuple:
                    line, text, key, ts = item
                    headers = [file_header, ("line", b"%d" % line), schema_header]
                    ts = ts or 0  # 0: no event time (headerless schemas); the producer stamps it
                    try:
                        # All positional, in the C signature's order (topic, value, key, partition, callback,
                        # on_delivery, timestamp, headers): keywords cost a dict per message. -1 lets the
                        # partitioner choose; None keeps the producer's on_delivery. A reordered signature would
                        # fail loudly (None is not a timestamp), not silently.
                        produce(data_topic, text, key, -1, None, None, ts, headers)
                    except BufferError:
                        _produce_when_room(producer, data_topic, text, key, ts, headers)
                    valid += 1
                    if not valid & 0x3FF:
                        poll(0)
                        if not valid & 0xFFFF:
                            faults.reached("ingest_mid_file")
                else:
                    bad += 1
                    errors.append(item)
                    _produce_when_room(producer, dlq_topic, _dlq_value(item, schema), name,
                                       0, [file_header, ("line", b"%d" % item.line), schema_header])
        except HeaderError as exc:
            header_error = str(exc)
        # The whole file was read; it must be the file that was hashed.
        while reader.read(HASH_CHUNK):
            pass
        total = valid + bad
        if header_error is not None:
            reason = f"{name}: header does not match schema {schema.id}: {header_error}"
        elif reader.digest.hexdigest() != sha:
            reason = f"{name}: the file changed while it was being read; it will be ingested when it is stable"
        elif total and bad / total > settings.max_bad_fraction:
            first = "; ".join(str(e) for e in errors[:3])
            reason = (f"{name}: {bad} of {total} rows are bad ({bad / total:.2%} > threshold "
                      f"{settings.max_bad_fraction:.2%}); nothing from this file was produced. First: {first}")
        else:
            reason = None
        if reason is not None:
            producer.abort_transaction(60)
            _quarantine(sessions, topic, sha, name, errors)
            _ledger_put(sessions, **ledger_row, status="rejected", rows_valid=0, rows_bad=bad, offsets={}, message=reason)
            raise IngestError(reason)

        if producer.flush(120) != 0 or deliveries.errors:
            producer.abort_transaction(60)
            raise IngestError(f"{name}: delivery failed: {deliveries.errors[:3]}")
        offsets = deliveries.as_json()
        marker_value = {"file": name, "rows": valid, "bad": bad, "offsets": offsets, "schema": schema.id, "topic": topic}
        produce(control_topic(topic), json.dumps(marker_value).encode(), sha.encode())
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
    faults.reached("ingest_after_commit")
    _quarantine(sessions, topic, sha, name, errors)
    _ledger_put(sessions, **ledger_row, status="committed", rows_valid=valid, rows_bad=bad, offsets=offsets, message=None)
    seconds = time.perf_counter() - started
    log.info("%s: %d rows committed to %s (%d bad -> %s) in %.2fs (%.0f rows/s)", name, valid, topic, bad,
             settings.dlq_topic, seconds, valid / seconds if seconds else 0.0)
    return FileResult(name, sha, "committed", valid, bad, offsets, seconds)


# ---------------------------------------------------------------------------------------------------------
# Several files, an interval, the CLI


def prepare(settings: Settings, *, use_airflow: bool) -> tuple[dict[str, Any], Any]:
    """Client configuration with the topics in place, and a session factory on a migrated database."""
    base = base_config(settings, use_airflow=use_airflow)
    log.info("Kafka client configuration: %s", redact(base))
    ensure_topic(base, settings.topic, partitions=settings.topic_partitions, retention_ms=settings.topic_retention_ms)
    ensure_topic(base, settings.dlq_topic, partitions=1, retention_ms=settings.topic_retention_ms)
    ensure_topic(base, control_topic(settings.topic), partitions=1, retention_ms=-1)
    return base, db.session_factory(settings.db_url)


def ingest_files(
    paths: Iterable, *, settings: Settings | None = None, use_airflow: bool = False, dag_run_id: str | None = None,
    interval: tuple[str | None, str | None] = (None, None),
) -> IntervalResult:
    settings = settings or get_settings()
    schema = load_schema(settings.schema)
    base, sessions = prepare(settings, use_airflow=use_airflow)
    result = IntervalResult(settings.topic, interval)
    for path in paths:
        result.files.append(ingest_file(path, settings=settings, schema=schema, base=base, sessions=sessions, dag_run_id=dag_run_id))
    return result


def ingest_interval(
    start: datetime | None, end: datetime | None, *, settings: Settings | None = None, use_airflow: bool = True,
    dag_run_id: str | None = None,
) -> IntervalResult:
    """Ingest the landed files dated in the data interval [start, end) (all dated files when it is empty)."""
    settings = settings or get_settings()
    files = list_interval_files(settings.landing_dir, start, end)
    interval = (start.isoformat() if start else None, end.isoformat() if end else None)
    if start is None or end is None or start == end:
        log.info("no data interval (manual run): considering every dated file in %s; the ledger skips ingested ones", settings.landing_dir)
    log.info("interval %s: %d file(s) in %s", interval, len(files), settings.landing_dir)
    return ingest_files(files, settings=settings, use_airflow=use_airflow, dag_run_id=dag_run_id, interval=interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.ingest.files", description="Ingest CSV files into Kafka exactly once.")
    parser.add_argument("files", nargs="+", help="CSV files (local paths or object-storage URLs)")
    parser.add_argument("--topic", help="target topic (default RETRAIN_TOPIC)")
    parser.add_argument("--dlq-topic", help="dead-letter topic (default <topic>.dlq)")
    parser.add_argument("--schema", help="schema name or YAML/JSON path (default RETRAIN_SCHEMA)")
    parser.add_argument("--bootstrap-servers", help="default KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument("--db-url", help="default RETRAIN_DB_URL")
    parser.add_argument("--max-bad-fraction", type=float)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    changes: dict[str, Any] = {}
    if args.topic:
        changes["topic"] = args.topic
        changes["dlq_topic"] = args.dlq_topic or f"{args.topic}.dlq"
    elif args.dlq_topic:
        changes["dlq_topic"] = args.dlq_topic
    for attr, value in (("schema", args.schema), ("kafka_bootstrap_servers", args.bootstrap_servers),
                        ("db_url", args.db_url), ("max_bad_fraction", args.max_bad_fraction)):
        if value is not None:
            changes[attr] = value
    settings = settings.with_overrides(**changes)
    try:
        result = ingest_files([_path(f) for f in args.files], settings=settings)
    except IngestError as exc:
        print(f"ingest failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
