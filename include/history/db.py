"""The project's database: the ingest ledger, quarantined rows, the accuracy history of training, model versions,
the generations of a topic and their rebuilds.

SQLAlchemy 2 models; a SQLite file by default, PostgreSQL by URL (``RETRAIN_DB_URL``). The schema is created
and upgraded only by the Alembic migrations in ``include/history/migrations`` (:func:`upgrade`). Writes are
idempotent upserts on natural keys (file hash, run id + mini-batch index, checkpoint id), so a retried or
crashed task never leaves two rows for the same thing. This module never builds SQL from strings.
"""

from __future__ import annotations

import fcntl
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_ID = 0x7265747261696E  # "retrain": the PostgreSQL advisory lock that serialises migrations


def utcnow() -> datetime:
    """Wall-clock time for audit columns only; never used in a decision."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class IngestedFile(Base):
    """The ingest ledger: one row per (topic, file content). Status pending -> committed | rejected, or
    ``waiting_for_rebuild``: a file older than the topic's newest data, recorded and not produced (a rebuild of the
    topic's next generation takes it; see :class:`Rebuild`). The topic is a generation's topic, so the ledger is
    keyed by generation."""

    __tablename__ = "ingest_files"
    __table_args__ = (UniqueConstraint("topic", "content_sha256", name="uq_ingest_files_topic_sha"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(255))
    content_sha256: Mapped[str] = mapped_column(String(64))
    file_name: Mapped[str] = mapped_column(Text)
    file_date: Mapped[str | None] = mapped_column(String(10), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    schema_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32))
    rows_valid: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_bad: Mapped[int] = mapped_column(BigInteger, default=0)
    offsets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {partition: [first, last]}
    transactional_id: Mapped[str] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    dag_run_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class QuarantinedRow(Base):
    """A bad CSV row set aside with its reason. One row per (file content, line)."""

    __tablename__ = "quarantined_rows"
    __table_args__ = (UniqueConstraint("content_sha256", "line", name="uq_quarantine_sha_line"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(255))
    content_sha256: Mapped[str] = mapped_column(String(64))
    file_name: Mapped[str] = mapped_column(Text)
    line: Mapped[int] = mapped_column(BigInteger)
    field: Mapped[str | None] = mapped_column(String(255), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """One bounded training task run (or a batch-baseline run: ``kind``)."""

    __tablename__ = "training_runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), default="incremental")
    model_name: Mapped[str] = mapped_column(String(128), default="default")
    dag_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dag_run_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    topic: Mapped[str] = mapped_column(String(255))
    consumer_group: Mapped[str] = mapped_column(String(255))
    reader: Mapped[str] = mapped_column(String(32), default="confluent")
    mode: Mapped[str] = mapped_column(String(32), default="seed")
    status: Mapped[str] = mapped_column(String(16))  # running | success | failed
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    offsets_from: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    offsets_to: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    end_offsets_at_start: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    records: Mapped[int] = mapped_column(BigInteger, default=0)
    poison: Mapped[int] = mapped_column(BigInteger, default=0)
    batches: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint_from: Mapped[str | None] = mapped_column(String(64), nullable=True)
    checkpoint_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    window_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    prequential_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)


class BatchMetric(Base):
    """Metrics of one mini-batch. Keyed by (model, first offset of each partition) so a retried run that
    re-trains the same offsets after a crash replaces the row instead of adding one."""

    __tablename__ = "batch_metrics"
    __table_args__ = (
        UniqueConstraint("model_name", "batch_key", name="uq_batch_metrics_model_key"),
        Index("ix_batch_metrics_model_seq", "model_name", "seq"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(128))
    batch_key: Mapped[str] = mapped_column(String(255))  # "p0:1200" (partition:first offset, ...)
    run_id: Mapped[str] = mapped_column(ForeignKey("training_runs.run_id"))
    kind: Mapped[str] = mapped_column(String(32), default="incremental")
    seq: Mapped[int] = mapped_column(BigInteger)  # records seen by the model before this mini-batch
    batch_index: Mapped[int] = mapped_column(Integer)  # index within the run
    offsets_from: Mapped[dict[str, Any]] = mapped_column(JSON)
    offsets_to: Mapped[dict[str, Any]] = mapped_column(JSON)
    n: Mapped[int] = mapped_column(Integer)
    n_train: Mapped[int] = mapped_column(Integer)
    n_eval: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    train_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    window_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    prequential_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    event_time_min: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    event_time_max: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CheckpointRecord(Base):
    __tablename__ = "checkpoints"

    checkpoint_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(Text)
    offsets: Mapped[dict[str, Any]] = mapped_column(JSON)
    records_total: Mapped[int] = mapped_column(BigInteger)
    schema_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DriftEvent(Base):
    __tablename__ = "drift_events"
    __table_args__ = (UniqueConstraint("model_name", "batch_key", name="uq_drift_model_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(128))
    batch_key: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    offsets: Mapped[dict[str, Any]] = mapped_column(JSON)
    event_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detector: Mapped[str] = mapped_column(String(64))
    accuracy_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    accuracy_after: Mapped[float | None] = mapped_column(Float, nullable=True)
    reaction: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---------------------------------------------------------------------------------------------------------
# The model lifecycle (include.lifecycle): versions, the champion pointer, the audit trail, alerts


class ModelVersion(Base):
    """One immutable model version: the checkpoint it came from, what it has seen, its metrics and the gate's verdict.

    ``status``: ``candidate`` (waiting for the gate), ``champion`` (served), ``rejected`` (the gate said no),
    ``retired`` (a former champion), ``superseded`` (never judged: a newer candidate replaced it).
    """

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_name", "checkpoint_id", name="uq_model_version_checkpoint"),
        Index("ix_model_versions_status", "model_name", "status"),
    )

    model_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    checkpoint_id: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    schema_id: Mapped[str] = mapped_column(String(128))
    topic: Mapped[str] = mapped_column(String(255))
    offsets: Mapped[dict[str, Any]] = mapped_column(JSON)
    records_total: Mapped[int] = mapped_column(BigInteger)
    event_time_min: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    event_time_max: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    path: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    files_removed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ModelPointer(Base):
    """Which version of a model is served: changed only together with the versions' statuses, in one transaction."""

    __tablename__ = "model_pointers"

    model_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    champion_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    previous_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    changed_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelEvent(Base):
    """The lifecycle's audit trail: who did what to which version, and why (registered, promoted, rejected...)."""

    __tablename__ = "model_events"
    __table_args__ = (
        UniqueConstraint("model_name", "event_key", name="uq_model_event_key"),
        Index("ix_model_events_model", "model_name", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(128))
    event_key: Mapped[str] = mapped_column(String(255))  # idempotence: a retried step does not record twice
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """Something a person should know (a rejected candidate, a drift, accuracy under the floor) and whether they were told."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("model_name", "alert_key", name="uq_alert_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(128))
    alert_key: Mapped[str] = mapped_column(String(255))  # idempotence: the same fact is one alert
    kind: Mapped[str] = mapped_column(String(32))
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    notified_at: Mapped[datetime | None] = mapped_column(nullable=True)
    notified_by: Mapped[str | None] = mapped_column(String(255), nullable=True)


# ---------------------------------------------------------------------------------------------------------
# Generations of a topic and their rebuilds (include.lifecycle.generations, include.rebuild)


class Generation(Base):
    """One generation of a topic: the Kafka topic that holds it and the model lineage rebuilt on it.

    Generation 1 of base topic ``T`` is ``T`` itself, and every model name trained on it is its own lineage.
    Generation ``N >= 2`` is the topic ``T.gN``, filled by a rebuild (:class:`Rebuild`) with every file in date order,
    and holds the lineage ``<model>.gN`` of the model name it was rebuilt for. ``status``: ``rebuilding`` (a rebuild is
    filling and training it), ``live`` (ingest, training and serving follow it: the one the pointer names),
    ``standby`` (a former live generation, kept for switching back: new files still go to it), ``rejected`` (its
    rebuild failed the gate), ``retired`` (beyond retention: its topics deleted; the rows stay).
    """

    __tablename__ = "generations"
    __table_args__ = (UniqueConstraint("topic", name="uq_generations_topic"),)

    base_topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    topic: Mapped[str] = mapped_column(String(255))
    model_name: Mapped[str | None] = mapped_column(String(128), nullable=True)  # None: generation 1 (every model)
    lineage: Mapped[str | None] = mapped_column(String(128), nullable=True)  # the model name of its lineage
    status: Mapped[str] = mapped_column(String(16))
    rebuild_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(nullable=True)


class GenerationPointer(Base):
    """Which generation of a base topic is live: changed only together with the generations' statuses and the new
    lineage's champion, in one transaction (as :class:`ModelPointer` for versions). No row: generation 1."""

    __tablename__ = "generation_pointers"

    base_topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    live_generation: Mapped[int] = mapped_column(Integer)
    previous_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    changed_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Rebuild(Base):
    """One rebuild: a new generation filled with every file in date order, a lineage trained on it from scratch, then
    the gate against the live champion and the switch (or not).

    ``state``: ``requested`` -> ``ingesting`` -> ``training`` -> ``gating`` (caught up; the gate waits for its rows)
    -> ``switched`` | ``rejected`` (or ``cancelled`` by a person). ``active_key`` is the base topic while the rebuild
    is active and NULL after, under a unique constraint: one active rebuild per topic, and a second request joins it
    (``requests`` lists every request: who, why, which files).
    """

    __tablename__ = "rebuilds"
    __table_args__ = (
        UniqueConstraint("active_key", name="uq_rebuilds_active"),
        UniqueConstraint("base_topic", "generation", name="uq_rebuilds_generation"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    base_topic: Mapped[str] = mapped_column(String(255))
    generation: Mapped[int] = mapped_column(Integer)
    topic: Mapped[str] = mapped_column(String(255))
    model_name: Mapped[str] = mapped_column(String(128))
    lineage: Mapped[str] = mapped_column(String(128))
    from_generation: Mapped[int] = mapped_column(Integer)  # the live generation when it was requested
    active_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(255))
    requests: Mapped[list[Any]] = mapped_column(JSON, default=list)
    files_planned: Mapped[int] = mapped_column(Integer, default=0)
    files_ingested: Mapped[int] = mapped_column(Integer, default=0)
    rows_ingested: Mapped[int] = mapped_column(BigInteger, default=0)
    files_left_out: Mapped[list[Any]] = mapped_column(JSON, default=list)  # older than what the generation holds
    trained_up_to: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {partition: next offset}
    records_trained: Mapped[int] = mapped_column(BigInteger, default=0)
    candidate_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)  # switch | reject
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)  # what it is doing or waiting for
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)


# ---------------------------------------------------------------------------------------------------------
# Engine, migrations, upserts

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the UI read while a trainer writes; busy_timeout waits on a writer instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def get_engine(url: str) -> Engine:
    """One engine per URL per process. The SQLite parent folder is created if missing."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url)
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        return engine


class HistoryNotReady(RuntimeError):
    """The history database does not exist yet or is not at the code's schema revision (nothing migrated it)."""


def _alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


_ready: set[str] = set()


def check_ready(url: str) -> None:
    """Raise :class:`HistoryNotReady` unless the database exists at the newest revision. Reads only.

    For readers that must not migrate (the UI plugin): the database is created where it is written.
    """
    if url in _ready:
        return
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    hint = "run `make run`, an ingest or training task, or `python -m include train` once to create it"
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if path and not path.startswith(":memory:") and not Path(path).is_file():
        raise HistoryNotReady(f"the history database {path} does not exist yet; {hint}")
    head = ScriptDirectory.from_config(_alembic_config(url)).get_current_head()
    with get_engine(url).connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise HistoryNotReady(f"the history database is at schema revision {current}, this code reads {head}; {hint}")
    _ready.add(url)


def upgrade(url: str) -> None:
    """Create or upgrade the schema to the newest Alembic revision (safe to call on every start)."""
    from alembic import command

    config = _alembic_config(url)
    engine = get_engine(url)
    # Two processes opening a fresh database at once (two tasks of a backfill) would both create the tables and
    # one would fail: migrations take a lock, so the second waits and then finds the schema up to date.
    with _migration_lock(url), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_ID)))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """An exclusive lock on a file beside a SQLite database (a no-op for other databases)."""
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if not path or path.startswith(":memory:"):
        yield
        return
    with open(f"{path}.migrate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def session_factory(url: str, *, migrate: bool = True) -> sessionmaker[Session]:
    """Sessions on ``url``; with ``migrate`` (the writers) the schema is brought to the newest revision first."""
    if migrate:
        upgrade(url)
    return sessionmaker(get_engine(url), expire_on_commit=False)


def upsert(session: Session, model: type[Base], rows: Iterable[Mapping[str, Any]], keys: tuple[str, ...]) -> None:
    """Insert ``rows`` or, where a row with the same ``keys`` exists, update it.

    One statement executed for many parameter sets (executemany): a single multi-row VALUES statement was
    ~20x slower for thousands of history rows, and would hit SQLite's bound-parameter limit.
    """
    rows = [dict(r) for r in rows]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two supported databases
        raise RuntimeError(f"unsupported database dialect {dialect}")
    stmt = insert(model)
    updates = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=updates) if updates else stmt.on_conflict_do_nothing(index_elements=list(keys))
    session.execute(stmt, rows)
