"""Alerts: facts a person should hear about, recorded once, then delivered as one digest by the notifiers.

- :func:`record_alert` writes an ``alerts`` row keyed by ``(model name, alert key)``: recording the same fact again
  (a retried task) changes nothing. Kinds: ``candidate_rejected`` (recorded by the promotion gate), ``drift`` and
  ``accuracy_below_floor`` (recorded by :func:`collect_run_alerts` from a run's history).
- :func:`deliver_pending` hands the alerts nobody was told about yet, as one :class:`Digest`, to the configured
  notifiers (Airflow ``BaseNotifier`` objects, :mod:`include.lifecycle.notifiers`), then marks them
  ``notified_at`` / ``notified_by``. A failed send marks nothing and raises, so the task fails and Airflow retries
  it; a retry after a success finds nothing pending and sends nothing. Delivery is at least once: a crash between
  a successful send and the mark (one database statement) sends that digest again on the retry.

This module never imports Airflow and never sends anything itself: a notifier is any callable taking a context.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from include.history import db
from include.lifecycle.registry import Registry

log = logging.getLogger(__name__)

KINDS = ("candidate_rejected", "drift", "accuracy_below_floor", "rebuild_rejected")
KIND_TITLES = {"candidate_rejected": "candidate rejected", "drift": "drift detected",
               "accuracy_below_floor": "accuracy under the floor", "rebuild_rejected": "rebuild rejected"}
#: The context key under which notifiers find the digest (``{{ alert_digest.subject }}`` in a notifier's template).
DIGEST_KEY = "alert_digest"
NOBODY = "nobody (no notifiers configured)"

Notifier = Callable[[Mapping[str, Any]], Any]


def record_alert(registry: Registry, model_name: str, kind: str, key: str, message: str, *,
                 version: int | None = None, details: dict[str, Any] | None = None) -> bool:
    """Record an alert unless the same ``(model_name, key)`` is recorded already.

    Args:
        registry: The registry (its database).
        model_name: The model it is about.
        kind: One of :data:`KINDS`.
        key: What makes it one fact (e.g. ``rejected:7``, ``drift:<batch key>``).
        message: One line for a person.
        version: The version it is about, if any.
        details: Numbers behind it (JSON-able).

    Returns:
        True when this call recorded it (False: it was recorded before).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown alert kind {kind!r}")
    try:
        with registry.sessions.begin() as session:
            exists = session.scalar(select(db.Alert.id).where(db.Alert.model_name == model_name,
                                                              db.Alert.alert_key == key))
            if exists is not None:
                return False
            session.add(db.Alert(model_name=model_name, alert_key=key, kind=kind, version=version,
                                 message=message, details=details, created_at=db.utcnow()))
        return True
    except IntegrityError:  # recorded at the same moment by another process: the same fact, once
        return False


# ---------------------------------------------------------------------------------------------------------
# Collecting: what a training run's history says a person should hear


def run_ids_of_dag_run(registry: Registry, dag_id: str, dag_run_id: str) -> list[str]:
    """The training runs one DAG run made (every attempt of its training task)."""
    with registry.sessions() as session:
        return list(session.scalars(select(db.TrainingRun.run_id).where(
            db.TrainingRun.dag_id == dag_id, db.TrainingRun.dag_run_id == dag_run_id)))


def collect_run_alerts(registry: Registry, model_name: str, run_ids: Sequence[str], *,
                       accuracy_floor: float | None) -> list[str]:
    """Record the alerts the history of ``run_ids`` calls for; the keys this call recorded.

    - every drift event of those runs (``drift_events``): kind ``drift``, key ``drift:<batch key>``;
    - every run that trained at least one mini-batch and ended with a window accuracy under ``accuracy_floor``
      (None: no floor): kind ``accuracy_below_floor``, key ``accuracy_below_floor:<run id>``. A run that trained
      nothing is not judged again: its model is the one the previous run was judged on.
    """
    if not run_ids:
        return []
    with registry.sessions() as session:
        drifts = session.scalars(select(db.DriftEvent).where(db.DriftEvent.model_name == model_name,
                                                             db.DriftEvent.run_id.in_(run_ids))
                                 .order_by(db.DriftEvent.seq)).all()
        runs = session.scalars(select(db.TrainingRun).where(db.TrainingRun.run_id.in_(run_ids),
                                                            db.TrainingRun.model_name == model_name)
                               .order_by(db.TrainingRun.started_at)).all()
        versions = dict(session.execute(select(db.ModelVersion.run_id, db.ModelVersion.version).where(
            db.ModelVersion.model_name == model_name, db.ModelVersion.run_id.in_(run_ids))).all())
    recorded = []
    for event in drifts:
        key = f"drift:{event.batch_key}"
        if record_alert(registry, model_name, "drift", key, _drift_message(event), version=versions.get(event.run_id),
                        details={"run_id": event.run_id, "seq": event.seq, "batch_key": event.batch_key,
                                 "event_time": event.event_time, "detector": event.detector,
                                 "reaction": event.reaction, "accuracy_before": _finite(event.accuracy_before),
                                 "accuracy_after": _finite(event.accuracy_after)}):
            recorded.append(key)
    for run in runs:
        accuracy = _finite(run.window_accuracy)
        if accuracy_floor is None or not run.batches or accuracy is None or accuracy >= accuracy_floor:
            continue
        key = f"accuracy_below_floor:{run.run_id}"
        message = (f"window accuracy {accuracy:.3f} after {run.records:,} records is under the floor "
                   f"{accuracy_floor:.3f} (RETRAIN_ACCURACY_FLOOR)")
        if record_alert(registry, model_name, "accuracy_below_floor", key, message,
                        version=versions.get(run.run_id),
                        details={"run_id": run.run_id, "dag_run_id": run.dag_run_id, "window_accuracy": accuracy,
                                 "floor": accuracy_floor, "records": int(run.records)}):
            recorded.append(key)
    if recorded:
        log.info("model %s: %d alert(s) recorded: %s", model_name, len(recorded), ", ".join(recorded))
    return recorded


def _drift_message(event: db.DriftEvent) -> str:
    before, after = _finite(event.accuracy_before), _finite(event.accuracy_after)
    accuracy = f"; accuracy {before:.3f} -> {after:.3f}" if before is not None and after is not None else ""
    return f"drift detected by {event.detector} at {event.seq:,} records{accuracy}; reaction: {event.reaction}"


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else float(value)


# ---------------------------------------------------------------------------------------------------------
# Delivering: the pending alerts as one digest, to the notifiers, then marked


@dataclass(frozen=True)
class Digest:
    """What the notifiers are given (in their context as ``alert_digest``): one message about several alerts.

    Attributes:
        model_name: The model the alerts are about.
        alerts: One dict per alert (id, kind, version, message, created_at ISO 8601, details), oldest first.
        subject: One line (an e-mail subject).
        text: Plain text, one line per alert.
        html: The same as escaped HTML (a table).
    """

    model_name: str
    alerts: list[dict[str, Any]] = field(default_factory=list)
    subject: str = ""
    text: str = ""
    html: str = ""


def pending_alerts(registry: Registry, model_name: str) -> list[db.Alert]:
    """Alerts of ``model_name`` nobody was told about yet, oldest first."""
    with registry.sessions() as session:
        return list(session.scalars(select(db.Alert).where(db.Alert.model_name == model_name,
                                                           db.Alert.notified_at.is_(None))
                                    .order_by(db.Alert.created_at, db.Alert.id)))


def build_digest(model_name: str, alerts: Iterable[db.Alert]) -> Digest:
    """One digest of ``alerts`` (subject, text, HTML); every text from the database is escaped in the HTML."""
    items = [{"id": a.id, "kind": a.kind, "version": a.version, "message": a.message,
              "created_at": _iso(a.created_at), "details": dict(a.details or {})} for a in alerts]
    counts: dict[str, int] = {}
    for item in items:
        counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    summary = ", ".join(f"{n} {KIND_TITLES.get(k, k)}" for k, n in counts.items())
    subject = f"[retrain] model {model_name}: {len(items)} alert{'s' if len(items) != 1 else ''} ({summary})"
    lines = [f"{i['created_at']} UTC  {KIND_TITLES.get(i['kind'], i['kind'])}"
             f"{'' if i['version'] is None else ' (version %d)' % i['version']}: {i['message']}" for i in items]
    text = f"{subject}\n\n" + "\n".join(lines) + "\n\nThe Model accuracy page in Airflow shows them.\n"
    rows = "".join(
        f"<tr><td>{html.escape(i['created_at'] or '')}</td><td>{html.escape(KIND_TITLES.get(i['kind'], i['kind']))}</td>"
        f"<td>{'' if i['version'] is None else i['version']}</td><td>{html.escape(i['message'])}</td></tr>"
        for i in items)
    body = (f"<p>{html.escape(subject)}</p><table border='1' cellpadding='4' cellspacing='0'>"
            f"<tr><th>when (UTC)</th><th>what</th><th>version</th><th>details</th></tr>{rows}</table>"
            "<p>The Model accuracy page in Airflow shows them.</p>")
    return Digest(model_name=model_name, alerts=items, subject=subject, text=text, html=body)


@dataclass(frozen=True)
class Delivery:
    """What :func:`deliver_pending` did: how many alerts, told to whom (``notified_by``)."""

    alerts: int
    notified_by: str | None
    digest: Digest | None


def deliver_pending(registry: Registry, model_name: str, notifiers: Sequence[Notifier], *,
                    context: Mapping[str, Any] | None = None) -> Delivery:
    """Give the pending alerts of ``model_name`` to every notifier as one digest, then mark them notified.

    Each notifier is called with ``context`` plus ``alert_digest`` (a :class:`Digest`). A notifier that raises
    stops the delivery: nothing is marked, the error propagates (the task fails and is retried, and the retry
    sends the same digest). What each notifier did is read from its ``last_delivery`` attribute when it has one
    (e.g. "email to ops@example.com"), else its class name; with no notifiers the alerts are marked as told to
    nobody, so they are shown as such and not mailed later in a flood.
    """
    alerts = pending_alerts(registry, model_name)
    if not alerts:
        log.info("model %s: no pending alerts", model_name)
        return Delivery(0, None, None)
    digest = build_digest(model_name, alerts)
    told = []
    for notifier in notifiers:
        notifier({**(context or {}), DIGEST_KEY: digest})
        told.append(str(getattr(notifier, "last_delivery", None) or type(notifier).__name__))
    notified_by = "; ".join(told) if told else NOBODY
    if not told:
        log.warning("model %s: %d alert(s) not sent to anyone: no notifiers configured", model_name, len(alerts))
    _mark_notified(registry, [a.id for a in alerts], notified_by)
    log.info("model %s: %d alert(s) delivered: %s", model_name, len(alerts), notified_by)
    return Delivery(len(alerts), notified_by, digest)


def _mark_notified(registry: Registry, ids: list[int], notified_by: str) -> None:
    with registry.sessions.begin() as session:
        session.execute(update(db.Alert).where(db.Alert.id.in_(ids), db.Alert.notified_at.is_(None))
                        .values(notified_at=db.utcnow(), notified_by=notified_by[:255]))


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else None


def notify_dag_run(model_name: str, dag_id: str, dag_run_id: str, notifiers: Sequence[Notifier], *,
                   context: Mapping[str, Any] | None = None, registry: Registry | None = None) -> dict[str, Any]:
    """The ``notify`` step of a training DAG run: record its drift and floor alerts, deliver every pending one.

    Returns:
        ``{"recorded": [keys], "delivered": n, "notified_by": ...}`` (the task's XCom).
    """
    if registry is None:
        from include.settings import get_settings

        registry = Registry(get_settings())
    run_ids = run_ids_of_dag_run(registry, dag_id, dag_run_id)
    recorded = collect_run_alerts(registry, model_name, run_ids, accuracy_floor=registry.settings.accuracy_floor)
    delivery = deliver_pending(registry, model_name, notifiers, context=context)
    return {"recorded": recorded, "delivered": delivery.alerts, "notified_by": delivery.notified_by}
