"""The accuracy chart's data: one model's accuracy series over records seen (or event time), downsampled, with the
runs they come from, the batch baseline, the Bayes-optimal accuracy and the drift events. Read-only."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from include.history import db
from include.monitoring.bayes import bayes_accuracy
from include.monitoring.downsample import downsample
from include.monitoring.lifecycle import chart_overlays
from include.monitoring.queries import BASELINE_KIND, XAxis, finite, iso, run_ids_for

SERIES = ("window_accuracy", "prequential_accuracy")
DEFAULT_MAX_POINTS = 2000
MAX_DRIFT_EVENTS = 1000


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
    accuracy = finite(run.window_accuracy)
    if accuracy is None:  # fall back to its last mini-batch
        accuracy = finite(
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
    from, the batch baseline, the Bayes-optimal accuracy, the drift events, and the lifecycle's overlays
    (promotion markers, the champion's and latest candidate's accuracy: :func:`include.monitoring.lifecycle.chart_overlays`).

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
        "drift_events": [...], "promotions": [...], "version_accuracy", "total_batches", ...}``; ``run`` indexes
        ``runs``.
    """
    started = time.perf_counter()
    with sessions() as session:
        run_ids = run_ids_for(session, dag_id, dag_run_id)
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
        overlays = chart_overlays(session, model_name, x_axis)
    return {
        "model_name": model_name,
        "x_axis": x_axis,
        "filter": {"dag_id": dag_id, "dag_run_id": dag_run_id},
        "max_points": max_points,
        "total_batches": int(len(curve.x)),
        "series": _series(curve, max_points),
        "runs": _runs(curve, run_rows),
        "baseline": baseline,
        "bayes_accuracy": bayes,
        "drift_events": _drift_events(drift_rows[:MAX_DRIFT_EVENTS], x_axis),
        "drift_events_truncated": len(drift_rows) > MAX_DRIFT_EVENTS,
        **overlays,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def _series(curve: _Curve, max_points: int) -> dict[str, dict[str, list]]:
    """Each series downsampled to ``max_points``, keeping the first and last point of every run's stretch."""
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
    return series


def _runs(curve: _Curve, run_rows: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs the curve's points come from (indexed by the series' ``run``), with their span on the x axis."""
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
            "started_at": iso(row.started_at) if row else None,
            "batches": int(counts[code]),
            "x_min": int(x_min[code]),
            "x_max": int(x_max[code]),
        })
    return runs


def _drift_events(rows: list[db.DriftEvent], x_axis: XAxis) -> list[dict[str, Any]]:
    drift = []
    for event in rows:
        x = event.seq if x_axis == "records" else event.event_time
        if x is None:
            continue
        drift.append({
            "x": int(x), "seq": int(event.seq), "run_id": event.run_id, "detector": event.detector,
            "reaction": event.reaction, "accuracy_before": finite(event.accuracy_before),
            "accuracy_after": finite(event.accuracy_after), "batch_key": event.batch_key,
        })
    return drift
