"""What the Model accuracy page and the report show: accuracy curves, training runs, the ingest ledger, Kafka lag.

Read-only over the history database (SQLAlchemy selects only; never SQL built from strings) and, for the lag,
the broker. Every function returns plain JSON-able dicts, so the plugin's API, the page and the PNG report show
the same numbers. Curves are downsampled here (LTTB, a few thousand points at most per series), so neither a
browser nor matplotlib is handed 100,000 mini-batches.

This module never writes a row (opening a database brings its schema up to date, as everywhere in the
project), never imports Airflow or TensorFlow at top level (the plugin imports it in every Airflow process),
and never blocks longer than its ``timeout`` on Kafka.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from include.history import db
from include.settings import Settings

log = logging.getLogger(__name__)

XAxis = Literal["records", "event_time"]
SERIES = ("window_accuracy", "prequential_accuracy")
BASELINE_KIND = "batch_baseline"
DEFAULT_MAX_POINTS = 2000
MAX_DRIFT_EVENTS = 1000
KAFKA_TIMEOUT_S = 3.0


@lru_cache(maxsize=8)
def sessions_for(db_url: str) -> sessionmaker[Session]:
    """One session factory per database URL per process; the schema is brought up to date once."""
    return db.session_factory(db_url, migrate=True)


# ---------------------------------------------------------------------------------------------------------
# Downsampling


def lttb_indices(x: np.ndarray, y: np.ndarray, n_out: int) -> np.ndarray:
    """Indices of the points Largest-Triangle-Three-Buckets keeps to draw ``(x, y)`` with ``n_out`` points.

    The first and last points are always kept; each bucket in between keeps the point that makes the largest
    triangle with the previous kept point and the next bucket's mean, which keeps peaks and dips visible.

    Args:
        x: sorted x values.
        y: y values (finite).
        n_out: how many points to keep (at least 3 to downsample at all).

    Returns:
        Sorted indices into ``x``; all of them when ``len(x) <= n_out``.
    """
    n = len(x)
    if n <= n_out or n <= 2:
        return np.arange(n)
    if n_out < 3:
        return np.array([0, n - 1])[:max(n_out, 0)]
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    edges = (np.floor(np.arange(n_out - 1) * (n - 2) / (n_out - 2)) + 1).astype(np.int64)
    edges[-1] = n - 1
    # Bucket i is [edges[i], edges[i + 1]); the last "bucket" is the last point alone.
    bounds = np.append(edges, n)
    sizes = np.diff(bounds)
    mean_x = np.add.reduceat(x, edges) / sizes
    mean_y = np.add.reduceat(y, edges) / sizes
    out = np.empty(n_out, dtype=np.int64)
    out[0], out[-1] = 0, n - 1
    a = 0
    for i in range(n_out - 2):
        lo, hi = edges[i], edges[i + 1]
        avg_x, avg_y = mean_x[i + 1], mean_y[i + 1]
        area = np.abs((x[a] - avg_x) * (y[lo:hi] - y[a]) - (x[a] - x[lo:hi]) * (avg_y - y[a]))
        a = lo + int(np.argmax(area))
        out[i + 1] = a
    return out


def downsample(x: np.ndarray, y: np.ndarray, max_points: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Indices to draw at most ``max_points`` points: LTTB, plus the indices in ``keep`` where they fit.

    ``keep`` (e.g. the first and last point of every run) is honoured only while it takes at most half of
    the budget, so the result never exceeds ``max_points``.
    """
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    keep = np.unique(keep) if keep is not None and len(keep) <= max_points // 2 else np.empty(0, dtype=np.int64)
    # The union has at most (max_points - len(keep)) + len(keep) points.
    return np.union1d(lttb_indices(x, y, max_points - len(keep)), keep)


# ---------------------------------------------------------------------------------------------------------
# Small helpers


def _utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for timezone-aware columns; they were written in UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _iso(value: datetime | None) -> str | None:
    value = _utc(value)
    return value.isoformat() if value is not None else None


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def format_offsets(offsets: Mapping[str, Any] | None) -> str:
    """``{"0": 120, "1": 80}`` -> ``"p0:120 p1:80"`` (partition order); empty for no offsets."""
    if not offsets:
        return ""
    items = sorted(offsets.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else str(kv[0]))
    return " ".join(f"p{p}:{o}" for p, o in items)


def _run_ids_for(session: Session, dag_id: str | None, dag_run_id: str | None) -> list[str] | None:
    """Training run ids of one DAG run (or DAG); None when no DAG filter is asked for."""
    if dag_id is None and dag_run_id is None:
        return None
    query = select(db.TrainingRun.run_id)
    if dag_id is not None:
        query = query.where(db.TrainingRun.dag_id == dag_id)
    if dag_run_id is not None:
        query = query.where(db.TrainingRun.dag_run_id == dag_run_id)
    return list(session.scalars(query))


# ---------------------------------------------------------------------------------------------------------
# Accuracy curve


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


def _baseline(session: Session, model_name: str) -> dict[str, Any] | None:
    """The newest successful batch-baseline run: of this model if it has one, else of any model."""
    base = (
        select(db.TrainingRun)
        .where(db.TrainingRun.kind == BASELINE_KIND, db.TrainingRun.status == "success")
        .order_by(db.TrainingRun.started_at.desc())
        .limit(1)
    )
    run = session.scalars(base.where(db.TrainingRun.model_name == model_name)).first()
    if run is None:
        run = session.scalars(base).first()
    if run is None:
        return None
    accuracy = _finite(run.window_accuracy)
    if accuracy is None:  # fall back to its last mini-batch
        accuracy = _finite(
            session.scalars(
                select(db.BatchMetric.window_accuracy)
                .where(db.BatchMetric.run_id == run.run_id, db.BatchMetric.window_accuracy.is_not(None))
                .order_by(db.BatchMetric.seq.desc())
                .limit(1)
            ).first()
        )
    if accuracy is None:
        return None
    return {"run_id": run.run_id, "model_name": run.model_name, "accuracy": accuracy, "records": int(run.records)}


@lru_cache(maxsize=4096)
def _read_sidecar(path: str, mtime_ns: int, size: int) -> tuple[float, int] | None:
    from include.demo.generate import meta_path

    try:
        meta = json.loads(meta_path(path).read_text(encoding="utf-8"))
        return float(meta["bayes_accuracy"]), int(meta["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def bayes_accuracy(session: Session, topic: str) -> float | None:
    """Bayes-optimal accuracy of the data on ``topic``, from the generator's ``.meta.json`` sidecars.

    The row-weighted mean over the committed files of the ingest ledger; None unless every one of them
    (with rows) has a readable sidecar, since a partial answer would be a wrong line on the chart.
    """
    from include.demo.generate import meta_path

    names = session.scalars(
        select(db.IngestedFile.file_name).where(
            db.IngestedFile.topic == topic, db.IngestedFile.status == "committed", db.IngestedFile.rows_valid > 0
        )
    ).all()
    if not names:
        return None
    total = weighted = 0.0
    for name in names:
        if "://" in name:
            return None  # object-storage files: sidecars are not read from the API server
        sidecar = meta_path(name)
        try:
            stat = sidecar.stat()
        except OSError:
            return None
        found = _read_sidecar(str(name), stat.st_mtime_ns, stat.st_size)
        if found is None:
            return None
        bayes, rows = found
        total += rows
        weighted += rows * bayes
    return round(weighted / total, 6) if total else None


@dataclass
class _Curve:
    x: np.ndarray
    run_codes: np.ndarray
    run_ids: list[str]
    values: dict[str, np.ndarray]


def _load_curve(session: Session, model_name: str, x_axis: XAxis, run_ids: list[str] | None) -> _Curve:
    x_col = db.BatchMetric.seq if x_axis == "records" else db.BatchMetric.event_time_max
    query = select(x_col, db.BatchMetric.run_id, *(getattr(db.BatchMetric, s) for s in SERIES)).where(
        db.BatchMetric.model_name == model_name, db.BatchMetric.kind != BASELINE_KIND, x_col.is_not(None)
    )
    if run_ids is not None:
        query = query.where(db.BatchMetric.run_id.in_(run_ids))
    # Core execution on the session's connection: the ORM's row processing would double the time for 100k rows.
    rows = session.connection().execute(query.order_by(db.BatchMetric.seq, db.BatchMetric.id)).fetchall()
    if not rows:
        empty = np.empty(0)
        return _Curve(empty, np.empty(0, dtype=np.int64), [], {s: empty for s in SERIES})
    columns = list(zip(*rows))
    x = np.asarray(columns[0], dtype=np.float64)
    codes: dict[str, int] = {}
    run_codes = np.fromiter((codes.setdefault(r, len(codes)) for r in columns[1]), dtype=np.int64, count=len(rows))
    values = {s: np.asarray([np.nan if v is None else v for v in columns[2 + i]], dtype=np.float64)
              for i, s in enumerate(SERIES)}
    if x_axis == "event_time":  # event time is not monotonic in seq; lines are drawn in x order
        order = np.argsort(x, kind="stable")
        x, run_codes = x[order], run_codes[order]
        values = {s: v[order] for s, v in values.items()}
    return _Curve(x, run_codes, list(codes), values)


def _run_boundaries(run_codes: np.ndarray) -> np.ndarray:
    """Index of the first and the last point of every stretch of one run."""
    if len(run_codes) == 0:
        return np.empty(0, dtype=np.int64)
    change = np.flatnonzero(np.diff(run_codes)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change - 1, [len(run_codes) - 1]))
    return np.union1d(starts, ends)


def accuracy_curve(
    sessions: sessionmaker[Session],
    *,
    model_name: str = "default",
    x_axis: XAxis = "records",
    max_points: int = DEFAULT_MAX_POINTS,
    dag_id: str | None = None,
    dag_run_id: str | None = None,
    topic: str | None = None,
) -> dict[str, Any]:
    """The chart's data: downsampled accuracy series over records seen (or event time), the runs they come
    from, the batch baseline, the Bayes-optimal accuracy and the drift events.

    Args:
        sessions: session factory of the history database.
        model_name: which model's history.
        x_axis: ``records`` (records seen by the model, ``batch_metrics.seq``) or ``event_time`` (epoch ms,
            the newest message of each mini-batch).
        max_points: upper bound on the points of each series.
        dag_id: only training runs of this DAG.
        dag_run_id: only training runs of this DAG run (the slice a DAG run's link opens).
        topic: topic whose ingest ledger gives the Bayes-optimal accuracy (omitted when None).

    Returns:
        ``{"series": {name: {"x", "y", "run"}}, "runs": [...], "baseline", "bayes_accuracy",
        "drift_events": [...], "total_batches", ...}``; ``run`` indexes ``runs``.
    """
    started = time.perf_counter()
    with sessions() as session:
        run_ids = _run_ids_for(session, dag_id, dag_run_id)
        curve = _load_curve(session, model_name, x_axis, run_ids)
        run_rows = {
            r.run_id: r
            for r in session.scalars(select(db.TrainingRun).where(db.TrainingRun.run_id.in_(curve.run_ids)))
        } if curve.run_ids else {}
        baseline = _baseline(session, model_name)
        bayes = bayes_accuracy(session, topic) if topic else None
        drift_query = select(db.DriftEvent).where(db.DriftEvent.model_name == model_name)
        if run_ids is not None:
            drift_query = drift_query.where(db.DriftEvent.run_id.in_(run_ids))
        drift_rows = session.scalars(drift_query.order_by(db.DriftEvent.seq).limit(MAX_DRIFT_EVENTS + 1)).all()

    boundaries = _run_boundaries(curve.run_codes)
    series: dict[str, dict[str, list]] = {}
    for name, values in curve.values.items():
        ok = np.flatnonzero(np.isfinite(values))
        x, y, codes = curve.x[ok], values[ok], curve.run_codes[ok]
        keep = np.searchsorted(ok, boundaries) if len(ok) else None
        keep = keep[(keep < len(ok))] if keep is not None else None
        chosen = downsample(x, y, max_points, keep)
        series[name] = {
            "x": [int(v) for v in x[chosen]],
            "y": [round(float(v), 5) for v in y[chosen]],
            "run": [int(v) for v in codes[chosen]],
        }

    n_runs = len(curve.run_ids)
    counts = np.bincount(curve.run_codes, minlength=n_runs)
    x_min, x_max = np.full(n_runs, np.inf), np.full(n_runs, -np.inf)
    np.minimum.at(x_min, curve.run_codes, curve.x)
    np.maximum.at(x_max, curve.run_codes, curve.x)
    runs = []
    for code, run_id in enumerate(curve.run_ids):
        row = run_rows.get(run_id)
        runs.append({
            "run_id": run_id,
            "dag_id": row.dag_id if row else None,
            "dag_run_id": row.dag_run_id if row else None,
            "status": row.status if row else None,
            "started_at": _iso(row.started_at) if row else None,
            "batches": int(counts[code]),
            "x_min": int(x_min[code]),
            "x_max": int(x_max[code]),
        })

    drift = []
    for event in drift_rows[:MAX_DRIFT_EVENTS]:
        x = event.seq if x_axis == "records" else event.event_time
        if x is None:
            continue
        drift.append({
            "x": int(x), "seq": int(event.seq), "run_id": event.run_id, "detector": event.detector,
            "reaction": event.reaction, "accuracy_before": _finite(event.accuracy_before),
            "accuracy_after": _finite(event.accuracy_after), "batch_key": event.batch_key,
        })

    return {
        "model_name": model_name,
        "x_axis": x_axis,
        "filter": {"dag_id": dag_id, "dag_run_id": dag_run_id},
        "max_points": max_points,
        "total_batches": int(len(curve.x)),
        "series": series,
        "runs": runs,
        "baseline": baseline,
        "bayes_accuracy": bayes,
        "drift_events": drift,
        "drift_events_truncated": len(drift_rows) > MAX_DRIFT_EVENTS,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }


# ---------------------------------------------------------------------------------------------------------
# Runs table and ingest ledger


def _run_dict(run: db.TrainingRun) -> dict[str, Any]:
    started, ended = _utc(run.started_at), _utc(run.ended_at)
    duration = (ended - started).total_seconds() if started and ended else None
    rate = run.records / duration if duration and duration > 0 else None
    return {
        "run_id": run.run_id,
        "kind": run.kind,
        "model_name": run.model_name,
        "dag_id": run.dag_id,
        "dag_run_id": run.dag_run_id,
        "status": run.status,
        "started_at": _iso(started),
        "ended_at": _iso(ended),
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
        "window_accuracy": _finite(run.window_accuracy),
        "prequential_accuracy": _finite(run.prequential_accuracy),
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
                "updated_at": _iso(f.updated_at),
            }
            for f in files
        ],
    }


# ---------------------------------------------------------------------------------------------------------
# Kafka: consumer lag and dead letters


def _kafka_base(settings: Settings) -> dict[str, Any]:
    from include.kafka.clients import base_config

    try:
        return base_config(settings, use_airflow=True)
    except Exception as exc:  # noqa: BLE001 - the page must still show something; fall back to the plain path
        log.warning("could not read the Airflow Kafka connection (%s); using KAFKA_BOOTSTRAP_SERVERS", exc)
        return base_config(settings)


def kafka_status(
    settings: Settings, *, timeout: float = KAFKA_TIMEOUT_S, config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Consumer lag per partition now (end offset minus the group's committed offset) and the dead-letter count.

    Lag counts offsets, transaction markers included: a run that reads a partition to its end commits the offset
    past the closing marker (lag 0), while a run stopped by a limit leaves the marker after its last record
    uncounted until the next run (lag 1). Never raises for an unreachable broker: returns
    ``available: False`` with the error, within about ``timeout`` seconds.

    Args:
        settings: topic, dead-letter topic and consumer group.
        timeout: overall budget in seconds for all broker calls.
        config: client configuration (default: the Airflow connection, else ``KAFKA_BOOTSTRAP_SERVERS``).
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    started = time.monotonic()
    deadline = started + timeout

    def left() -> float:
        return max(0.05, deadline - time.monotonic())

    result: dict[str, Any] = {
        "available": False, "error": None, "topic": settings.topic, "consumer_group": settings.consumer_group,
        "partitions": [], "total_lag": None, "dlq_topic": settings.dlq_topic, "dead_letters": None,
    }
    try:
        base = dict(config) if config is not None else _kafka_base(settings)
    except Exception as exc:  # noqa: BLE001
        result["error"] = f"no Kafka configuration: {exc}"
        return result
    client_config = {
        **base,
        "group.id": settings.consumer_group,
        "enable.auto.commit": False,
        "allow.auto.create.topics": False,
        "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
        # A broker that is away is reported in the answer; librdkafka's per-retry FAIL lines would only
        # flood the API server's log on every page load.
        "log_level": 2,
        "logger": logging.getLogger("include.monitoring.kafka"),
    }
    consumer = None
    try:
        consumer = Consumer(client_config)
        metadata = consumer.list_topics(timeout=left())
        topic_meta = metadata.topics.get(settings.topic)
        if topic_meta is None or topic_meta.error is not None:
            result["error"] = f"topic {settings.topic} not found"
        else:
            tps = [TopicPartition(settings.topic, p) for p in sorted(topic_meta.partitions)]
            committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=left())}
            total = 0
            for tp in tps:
                low, high = consumer.get_watermark_offsets(tp, timeout=left(), cached=False)
                done = committed.get(tp.partition, -1)
                lag = high - (done if done >= 0 else low)
                total += lag
                result["partitions"].append({"partition": tp.partition, "start": low, "end": high,
                                             "committed": done if done >= 0 else None, "lag": lag})
            result["total_lag"] = total
        dlq_meta = metadata.topics.get(settings.dlq_topic)
        if dlq_meta is None or dlq_meta.error is not None:
            result["dead_letters"] = 0  # no dead-letter topic yet: nothing was ever sent there
        else:
            count = 0
            for p in sorted(dlq_meta.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(settings.dlq_topic, p), timeout=left(), cached=False)
                count += high - low
            result["dead_letters"] = count
        result["available"] = True
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        result["error"] = error.str() if hasattr(error, "str") else str(exc)
    except Exception as exc:  # noqa: BLE001 - any client failure means: unavailable now
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if consumer is not None:
            try:
                consumer.close()
            except Exception:  # noqa: BLE001
                pass
    result["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


# ---------------------------------------------------------------------------------------------------------
# Markdown (the report)


def runs_markdown(runs: Sequence[Mapping[str, Any]]) -> str:
    """The runs table as GitHub-flavoured markdown (the report's ``runs.md``)."""
    header = ["DAG run", "kind", "start", "duration (s)", "records", "records/s", "offsets from", "offsets to",
              "stop reason", "checkpoint", "status", "window acc."]

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1 else f"{value:,.1f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in runs:
        dag_run = f"{r['dag_id']} / {r['dag_run_id']}" if r.get("dag_id") and r.get("dag_run_id") else r.get("dag_run_id") or r["run_id"]
        values = [dag_run, r["kind"], r["started_at"], r["duration_s"], r["records"], r["records_per_s"],
                  r["offsets_from"], r["offsets_to"], r["stop_reason"], (r["checkpoint_id"] or "")[:12] or None,
                  r["status"], r["window_accuracy"]]
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"
