"""Read-only queries over the history database: the session factory, models, training runs and the ingest ledger.

SQLAlchemy selects only (never SQL built from strings). Every function returns plain JSON-able dicts, so the plugin's
API, the page and the report show the same numbers. Opening a database here never migrates it: the database is
created and upgraded where it is written (``make run``, the DAG tasks, the command line); until then
:func:`sessions_for` raises :class:`include.history.db.HistoryNotReady`."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from include.history import db

XAxis = Literal["records", "event_time"]
BASELINE_KIND = "batch_baseline"


@lru_cache(maxsize=8)
def _ready_sessions(db_url: str) -> sessionmaker[Session]:
    return db.session_factory(db_url, migrate=False)


def sessions_for(db_url: str) -> sessionmaker[Session]:
    """One read-only session factory per database URL per process; raises HistoryNotReady until it is migrated."""
    db.check_ready(db_url)
    return _ready_sessions(db_url)


def utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for timezone-aware columns; they were written in UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    value = utc(value)
    return value.isoformat() if value is not None else None


def finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def format_offsets(offsets: Mapping[str, Any] | None) -> str:
    """``{"0": 120, "1": 80}`` -> ``"p0:120 p1:80"`` (partition order); empty for no offsets."""
    if not offsets:
        return ""
    items = sorted(offsets.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else str(kv[0]))
    return " ".join(f"p{p}:{o}" for p, o in items)


def run_ids_for(session: Session, dag_id: str | None, dag_run_id: str | None) -> list[str] | None:
    """Training run ids of one DAG run (or DAG); None when no DAG filter is asked for."""
    if dag_id is None and dag_run_id is None:
        return None
    query = select(db.TrainingRun.run_id)
    if dag_id is not None:
        query = query.where(db.TrainingRun.dag_id == dag_id)
    if dag_run_id is not None:
        query = query.where(db.TrainingRun.dag_run_id == dag_run_id)
    return list(session.scalars(query))


def list_models(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Model names that have mini-batch history, with their row counts, most rows first."""
    with sessions() as session:
        rows = session.execute(
            select(db.BatchMetric.model_name, func.count())
            .where(db.BatchMetric.kind != BASELINE_KIND)
            .group_by(db.BatchMetric.model_name)
            .order_by(func.count().desc(), db.BatchMetric.model_name)
        ).all()
    return [{"model_name": name, "batches": int(count)} for name, count in rows]


def _run_dict(run: db.TrainingRun) -> dict[str, Any]:
    started, ended = utc(run.started_at), utc(run.ended_at)
    duration = (ended - started).total_seconds() if started and ended else None
    rate = run.records / duration if duration and duration > 0 else None
    return {
        "run_id": run.run_id,
        "kind": run.kind,
        "model_name": run.model_name,
        "dag_id": run.dag_id,
        "dag_run_id": run.dag_run_id,
        "status": run.status,
        "started_at": iso(started),
        "ended_at": iso(ended),
        "duration_s": round(duration, 3) if duration is not None else None,
        "records": int(run.records),
        "records_per_s": round(rate, 1) if rate is not None else None,
        "batches": int(run.batches),
        "poison": int(run.poison),
        "offsets_from": format_offsets(run.offsets_from),
        "offsets_to": format_offsets(run.offsets_to),
        "stop_reason": run.stop_reason,
        "checkpoint_from": run.checkpoint_from,
        "checkpoint_id": run.checkpoint_id,
        "window_accuracy": finite(run.window_accuracy),
        "prequential_accuracy": finite(run.prequential_accuracy),
        "message": run.message,
    }


def list_runs(
    sessions: sessionmaker[Session],
    *,
    model_name: str | None = None,
    dag_id: str | None = None,
    dag_run_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """Training runs (incremental and baseline), newest first."""
    query = select(db.TrainingRun)
    if model_name is not None:
        query = query.where(db.TrainingRun.model_name == model_name)
    if dag_id is not None:
        query = query.where(db.TrainingRun.dag_id == dag_id)
    if dag_run_id is not None:
        query = query.where(db.TrainingRun.dag_run_id == dag_run_id)
    with sessions() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery()))
        rows = session.scalars(
            query.order_by(db.TrainingRun.started_at.desc(), db.TrainingRun.run_id).limit(limit).offset(offset)
        ).all()
    return {"total": int(total or 0), "limit": limit, "offset": offset, "runs": [_run_dict(r) for r in rows]}


def ingest_ledger(
    sessions: sessionmaker[Session], *, topic: str | None = None, limit: int = 100, offset: int = 0
) -> dict[str, Any]:
    """The ingest ledger, newest first: one entry per file with its rows, quarantined rows and status."""
    query = select(db.IngestedFile)
    if topic is not None:
        query = query.where(db.IngestedFile.topic == topic)
    totals_query = select(
        func.count(), func.coalesce(func.sum(db.IngestedFile.rows_valid), 0), func.coalesce(func.sum(db.IngestedFile.rows_bad), 0)
    )
    quarantine_total = select(func.count()).select_from(db.QuarantinedRow)
    if topic is not None:
        totals_query = totals_query.where(db.IngestedFile.topic == topic)
        quarantine_total = quarantine_total.where(db.QuarantinedRow.topic == topic)
    with sessions() as session:
        count, rows_valid, rows_bad = session.execute(totals_query).one()
        quarantined_all = session.scalar(quarantine_total)
        files = session.scalars(
            query.order_by(db.IngestedFile.created_at.desc(), db.IngestedFile.id.desc()).limit(limit).offset(offset)
        ).all()
        shas = {f.content_sha256 for f in files}
        quarantined: dict[tuple[str, str], int] = {}
        if shas:
            for t, sha, n in session.execute(
                select(db.QuarantinedRow.topic, db.QuarantinedRow.content_sha256, func.count())
                .where(db.QuarantinedRow.content_sha256.in_(shas))
                .group_by(db.QuarantinedRow.topic, db.QuarantinedRow.content_sha256)
            ):
                quarantined[(t, sha)] = int(n)
    return {
        "total": int(count),
        "limit": limit,
        "offset": offset,
        "totals": {"files": int(count), "rows_valid": int(rows_valid), "rows_bad": int(rows_bad),
                   "quarantined": int(quarantined_all or 0)},
        "files": [
            {
                "file": Path(f.file_name).name if "://" not in f.file_name else f.file_name.rsplit("/", 1)[-1],
                "path": f.file_name,
                "file_date": f.file_date,
                "topic": f.topic,
                "status": f.status,
                "rows_valid": int(f.rows_valid),
                "rows_bad": int(f.rows_bad),
                "quarantined": quarantined.get((f.topic, f.content_sha256), 0),
                "size_bytes": int(f.size_bytes),
                "attempts": int(f.attempts),
                "offsets": format_offsets({k: f"{v[0]}-{v[1]}" if isinstance(v, (list, tuple)) and len(v) == 2 else v
                                           for k, v in (f.offsets or {}).items()}),
                "dag_run_id": f.dag_run_id,
                "message": f.message,
                "updated_at": iso(f.updated_at),
            }
            for f in files
        ],
    }
