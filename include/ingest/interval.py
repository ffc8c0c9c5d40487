"""Ingest several files, or the files of a data interval: what the ingest DAG's task and ``python -m include ingest`` call.

Opens the Kafka clients (the Airflow Connection inside tasks) and the history database (migrated here: ingest
writes the ledger), makes sure the topics exist, then ingests file by file (:mod:`include.ingest.transaction`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from include.history import db
from include.ingest.landing import list_interval_files
from include.ingest.markers import control_topic
from include.ingest.transaction import FileResult, ingest_file
from include.kafka.clients import KafkaClients
from include.schema import load_schema
from include.settings import Settings, get_settings

log = logging.getLogger(__name__)

_NEW = ("committed", "recovered")


@dataclass
class IntervalResult:
    topic: str
    interval: tuple[str | None, str | None]
    files: list[FileResult] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files if f.status in _NEW)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "interval": list(self.interval),
            "files": [f.as_dict() for f in self.files],
            "rows_new": self.rows,
            "rows_bad": sum(f.bad for f in self.files if f.status in _NEW),
            "files_new": sum(f.status in _NEW for f in self.files),
            "files_skipped": sum(f.status == "skipped" for f in self.files),
        }


def prepare(settings: Settings, *, use_airflow: bool) -> tuple[KafkaClients, Any]:
    """Kafka clients with the topics in place, and a session factory on a migrated database."""
    clients = KafkaClients(settings, use_airflow=use_airflow)
    log.info("Kafka client configuration: %s", clients.describe())
    clients.ensure_topic(settings.topic, partitions=settings.topic_partitions, retention_ms=settings.topic_retention_ms)
    clients.ensure_topic(settings.dlq_topic, partitions=1, retention_ms=settings.topic_retention_ms)
    clients.ensure_topic(control_topic(settings.topic), partitions=1, retention_ms=-1)
    return clients, db.session_factory(settings.db_url)


def ingest_files(paths: Iterable, *, settings: Settings | None = None, use_airflow: bool = False,
                 dag_run_id: str | None = None, interval: tuple[str | None, str | None] = (None, None)) -> IntervalResult:
    """Ingest ``paths`` in order, each exactly once; stops at the first file that must be rejected (IngestError)."""
    settings = settings or get_settings()
    schema = load_schema(settings.schema_name)
    clients, sessions = prepare(settings, use_airflow=use_airflow)
    result = IntervalResult(settings.topic, interval)
    for path in paths:
        result.files.append(ingest_file(path, settings=settings, schema=schema, clients=clients, sessions=sessions,
                                        dag_run_id=dag_run_id))
    return result


def ingest_interval(start: datetime | None, end: datetime | None, *, settings: Settings | None = None,
                    use_airflow: bool = True, dag_run_id: str | None = None) -> IntervalResult:
    """Ingest the landed files dated in the data interval [start, end) (all dated files when it is empty)."""
    settings = settings or get_settings()
    files = list_interval_files(settings.landing_dir, start, end)
    interval = (start.isoformat() if start else None, end.isoformat() if end else None)
    if start is None or end is None or start == end:
        log.info("no data interval (manual run): considering every dated file in %s; the ledger skips ingested ones",
                 settings.landing_dir)
    log.info("interval %s: %d file(s) in %s", interval, len(files), settings.landing_dir)
    return ingest_files(files, settings=settings, use_airflow=use_airflow, dag_run_id=dag_run_id, interval=interval)
