"""What the Model accuracy page shows of the model lifecycle: the versions and their decisions, the audit trail, the
alerts, and the chart's overlays (when each promotion or rollback happened; the champion's and the latest
candidate's accuracy). Read-only, like the rest of :mod:`include.monitoring`.

A promotion is a moment in wall-clock time; the chart's x axis is records seen (or event time). A marker is drawn
where the stream stood then: at the last mini-batch covered by the newest version registered before it (for the gate,
the version whose held-out rows it judged on), a point of the curve.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from include.history import db
from include.monitoring.queries import BASELINE_KIND, XAxis, finite, iso, utc

MAX_VERSIONS = 200
MAX_EVENTS = 200
DECISIONS = ("promoted", "rejected", "rolled_back", "superseded")
SWITCHES = ("promoted", "rolled_back")
GATE_FIELDS = ("candidate_accuracy", "champion_accuracy", "rows", "mcnemar_p", "champion_version",
               "evaluated_on_version", "tolerance", "floor")


def _gate(gate: dict[str, Any] | None) -> dict[str, Any] | None:
    if not gate:
        return None
    return {k: (finite(gate[k]) if isinstance(gate.get(k), float) else gate.get(k)) for k in GATE_FIELDS}


def _decisions(session: Session, model_name: str) -> dict[int, db.ModelEvent]:
    """The latest deciding event (promoted, rejected, rolled back, superseded) of each version."""
    rows = session.scalars(select(db.ModelEvent).where(db.ModelEvent.model_name == model_name,
                                                       db.ModelEvent.action.in_(DECISIONS))
                           .order_by(db.ModelEvent.id)).all()
    return {e.version: e for e in rows if e.version is not None}


def versions_view(sessions: sessionmaker[Session], model_name: str) -> dict[str, Any]:
    """The model's versions newest first (champion marked, decision, who and when), its pointer and audit trail."""
    with sessions() as session:
        pointer = session.get(db.ModelPointer, model_name)
        rows = session.scalars(select(db.ModelVersion).where(db.ModelVersion.model_name == model_name)
                               .order_by(db.ModelVersion.version.desc()).limit(MAX_VERSIONS)).all()
        total = session.scalar(select(func.count()).select_from(db.ModelVersion)
                               .where(db.ModelVersion.model_name == model_name))
        decided = _decisions(session, model_name)
        events = session.scalars(select(db.ModelEvent).where(db.ModelEvent.model_name == model_name)
                                 .order_by(db.ModelEvent.id.desc()).limit(MAX_EVENTS)).all()
    champion = pointer.champion_version if pointer is not None else None
    versions = []
    for row in rows:
        event = decided.get(row.version)
        versions.append({
            "version": row.version, "status": row.status, "champion": row.version == champion,
            "created_at": iso(row.created_at), "records_total": int(row.records_total), "run_id": row.run_id,
            "window_accuracy": finite((row.metrics or {}).get("window_accuracy")), "gate": _gate(row.gate),
            "reason": row.reason, "decided_at": iso(row.decided_at),
            "decided_by": event.actor if event is not None else None, "on_disk": row.files_removed_at is None,
        })
    return {
        "model_name": model_name, "champion": champion, "total": int(total or 0),
        "previous": pointer.previous_version if pointer is not None else None,
        "pointer": None if pointer is None else {"changed_by": pointer.changed_by, "reason": pointer.reason,
                                                 "changed_at": iso(pointer.changed_at)},
        "versions": versions,
        "events": [{"id": e.id, "version": e.version, "action": e.action, "actor": e.actor, "reason": e.reason,
                    "at": iso(e.created_at)} for e in events],
    }


def alerts_view(sessions: sessionmaker[Session], model_name: str, *, limit: int = 100) -> dict[str, Any]:
    """The model's alerts, newest first, each notified (when, to whom) or pending; and how many are pending."""
    with sessions() as session:
        rows = session.scalars(select(db.Alert).where(db.Alert.model_name == model_name)
                               .order_by(db.Alert.created_at.desc(), db.Alert.id.desc()).limit(limit)).all()
        total, pending = session.execute(
            select(func.count(), func.count().filter(db.Alert.notified_at.is_(None)))
            .where(db.Alert.model_name == model_name)).one()
    return {
        "model_name": model_name, "total": int(total), "pending": int(pending), "limit": limit,
        "alerts": [{"id": a.id, "kind": a.kind, "version": a.version, "message": a.message,
                    "created_at": iso(a.created_at), "notified_at": iso(a.notified_at), "notified_by": a.notified_by}
                   for a in rows],
    }


def chart_overlays(session: Session, model_name: str, x_axis: XAxis) -> dict[str, Any]:
    """Promotion and rollback markers on the x axis, and the champion's and latest candidate's accuracy."""
    versions = session.scalars(select(db.ModelVersion).where(db.ModelVersion.model_name == model_name)
                               .order_by(db.ModelVersion.created_at, db.ModelVersion.version)).all()
    switches = session.scalars(select(db.ModelEvent).where(db.ModelEvent.model_name == model_name,
                                                           db.ModelEvent.action.in_(SWITCHES))
                               .order_by(db.ModelEvent.created_at, db.ModelEvent.id).limit(MAX_EVENTS)).all()
    pointer = session.get(db.ModelPointer, model_name)
    created = [utc(v.created_at) for v in versions]
    markers = []
    for event in switches:
        index = bisect_right(created, utc(event.created_at)) - 1
        point = _last_point(session, model_name, versions[index].records_total, x_axis) if index >= 0 else None
        if point is None:
            continue
        markers.append({"x": int(point), "version": event.version, "action": event.action, "actor": event.actor,
                        "reason": event.reason, "at": iso(event.created_at)})
    return {"promotions": markers, "version_accuracy": _accuracy_lines(versions, pointer)}


def _last_point(session: Session, model_name: str, records_total: int, x_axis: XAxis) -> int | None:
    """The x of the last mini-batch a version covers (``records_total`` records): a point on the curve."""
    x_col = db.BatchMetric.seq if x_axis == "records" else db.BatchMetric.event_time_max
    return session.scalar(select(x_col).where(db.BatchMetric.model_name == model_name,
                                              db.BatchMetric.kind != BASELINE_KIND,
                                              db.BatchMetric.seq < records_total)
                          .order_by(db.BatchMetric.seq.desc()).limit(1))


def _accuracy_lines(versions: list[db.ModelVersion], pointer: db.ModelPointer | None) -> dict[str, Any]:
    """The champion's and the latest candidate's accuracy, and where each number comes from.

    When the newest other version was judged against today's champion, both numbers are the gate's (the same
    held-out rows); otherwise each version's own: its gate accuracy if it was judged, else its window accuracy at
    registration.
    """
    champion = next((v for v in versions if pointer is not None and v.version == pointer.champion_version), None)
    others = [v for v in versions if champion is None or v.version != champion.version]
    latest = max(others, key=lambda v: v.version) if others else None
    gate = (latest.gate or {}) if latest is not None else {}
    paired = (champion is not None and gate.get("champion_version") == champion.version
              and finite(gate.get("candidate_accuracy")) is not None and finite(gate.get("champion_accuracy")) is not None)
    out: dict[str, Any] = {"champion": None, "candidate": None}
    if paired:
        source = f"gate, on the held-out rows of version {gate.get('evaluated_on_version')}"
        out["champion"] = {"version": champion.version, "accuracy": finite(gate["champion_accuracy"]), "source": source}
        out["candidate"] = {"version": latest.version, "status": latest.status,
                            "accuracy": finite(gate["candidate_accuracy"]), "source": source}
        return out
    for key, row in (("champion", champion), ("candidate", latest)):
        if row is None:
            continue
        judged = finite((row.gate or {}).get("candidate_accuracy"))
        accuracy = judged if judged is not None else finite((row.metrics or {}).get("window_accuracy"))
        if accuracy is not None:
            out[key] = {"version": row.version, "status": row.status, "accuracy": accuracy,
                        "source": "gate" if judged is not None else "window accuracy at registration"}
    return out
