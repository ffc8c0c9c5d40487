"""Ingest several files, or the files of a data interval: what the ingest DAG's task and ``python -m include ingest`` call.

Opens the Kafka clients (the Airflow Connection inside tasks) and the history database (migrated here: ingest
writes the ledger), makes sure the topics exist, then ingests file by file (:mod:`include.ingest.transaction`) into
the **live generation** of the topic (``RETRAIN_TOPIC`` itself until a rebuild switched to ``<topic>.gN``: see
:mod:`include.lifecycle.generations`). A file older than the live data waits for a rebuild: one is requested (or
the running one joined) and the result says so. Afterwards the new files are appended to the generations that
follow the live one (a running rebuild's, the standby ones: :mod:`include.rebuild.fill`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from include.history import db
from include.ingest.landing import list_interval_files
from include.ingest.ledger import WAITING
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
    generation: int = 1
    rebuild: dict[str, Any] | None = None  # the rebuild the waiting files requested or joined
    followers: dict[int, dict[str, Any]] = field(default_factory=dict)  # what the following generations got

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
            "files_waiting": [f.file for f in self.files if f.status == WAITING],
            "generation": self.generation,
            "rebuild": self.rebuild,
            "followers": {str(g): v for g, v in self.followers.items()},
        }

    def waiting_lines(self) -> list[str]:
        """One line per file that waits for a rebuild (what the task log and the command line say)."""
        suffix = ""
        if self.rebuild is not None:
            suffix = (f" (rebuild {self.rebuild['id']} of generation {self.rebuild['generation']}: "
                      f"{'joined, ' if self.rebuild['joined'] else ''}{self.rebuild['state']})")
        return [f"{f.message}{suffix}" for f in self.files if f.status == WAITING]


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
    """Ingest ``paths`` in order into the live generation, each exactly once; stops at the first file that must be
    rejected (IngestError). Older files wait for a rebuild (requested here); new files also go to the generations that
    follow the live one."""
    from include.lifecycle.generations import Generations, generation_settings
    from include.rebuild import records
    from include.rebuild.fill import append_to_followers

    settings = settings or get_settings()
    schema = load_schema(settings.schema_name)
    generation = Generations(db.session_factory(settings.db_url), settings.topic).live()
    live = generation_settings(settings, generation)
    clients, sessions = prepare(live, use_airflow=use_airflow)
    result = IntervalResult(live.topic, interval, generation=generation)
    for path in paths:
        result.files.append(ingest_file(path, settings=live, schema=schema, clients=clients, sessions=sessions,
                                        dag_run_id=dag_run_id))
    # Files recorded as waiting now request a rebuild (or join the running one); seen again, they do not request
    # another (a rejected rebuild is not retried by a rerun: `python -m include rebuild request` asks by hand).
    waiting = [f for f in result.files if f.status == WAITING and not f.recorded_before]
    if waiting:
        reason = f"{len(waiting)} file(s) older than the newest data in {live.topic}: " + ", ".join(
            Path(f.file).name for f in waiting[:5]) + (" ..." if len(waiting) > 5 else "")
        info, joined = records.request(sessions, settings.topic, settings.rebuild_model, reason=reason,
                                       actor=f"ingest {dag_run_id}" if dag_run_id else "ingest",
                                       files=[f.file for f in waiting])
        result.rebuild = {"id": info.id, "generation": info.generation, "state": info.state, "joined": joined}
    for line in result.waiting_lines():
        log.warning("%s", line)
    if any(f.status in _NEW for f in result.files):
        result.followers = append_to_followers(settings, clients, sessions, schema, dag_run_id=dag_run_id)
    active = records.active(sessions, settings.topic)
    if active is not None and result.rebuild is None:
        result.rebuild = {"id": active.id, "generation": active.generation, "state": active.state, "joined": False}
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
