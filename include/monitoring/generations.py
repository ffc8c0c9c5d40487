"""What the Model accuracy page shows of generations and rebuilds: which generation is live and since when, every
generation with its topic and the model's lineage in it, every rebuild with its progress (files, rows, records
trained), the gate's numbers and its decision, and the accuracy curve of the newest rebuild's lineage beside the live
lineage's, both over event time (a rebuild starts with older weeks, so records seen would not line up). Read-only,
like the rest of :mod:`include.monitoring`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from include.history import db
from include.lifecycle.generations import FIRST, generation_topic, lineage_name, live_generation
from include.monitoring.curve import accuracy_curve
from include.monitoring.queries import finite, iso

MAX_REBUILDS = 20
CURVE_POINTS = 400
GATE_FIELDS = ("candidate_accuracy", "champion_accuracy", "rows", "mcnemar_p", "tolerance", "candidate_model",
               "champion_model", "champion_version", "evaluated_on_model", "evaluated_on_version")


def _gate(gate: dict[str, Any] | None) -> dict[str, Any] | None:
    if not gate:
        return None
    return {k: (finite(gate[k]) if isinstance(gate.get(k), float) else gate.get(k)) for k in GATE_FIELDS if k in gate}


def _lineage(row: db.Generation | None, generation: int, model_name: str) -> str | None:
    if generation == FIRST:
        return model_name
    return row.lineage if row is not None and row.model_name == model_name else None


def generations_view(sessions: sessionmaker[Session], base_topic: str, model_name: str, *,
                     max_points: int = CURVE_POINTS) -> dict[str, Any]:
    """The base topic's generations, its rebuilds (newest first) and the newest rebuild's curve beside the live one."""
    with sessions() as session:
        live = live_generation(session, base_topic)
        pointer = session.get(db.GenerationPointer, base_topic)
        rows = {r.generation: r for r in session.scalars(
            select(db.Generation).where(db.Generation.base_topic == base_topic))}
        rebuilds = session.scalars(select(db.Rebuild).where(db.Rebuild.base_topic == base_topic)
                                   .order_by(db.Rebuild.id.desc()).limit(MAX_REBUILDS)).all()
        champions = {p.model_name: p.champion_version for p in session.scalars(select(db.ModelPointer))}
    numbers = sorted(set(rows) | {FIRST})
    generations = []
    for number in numbers:
        row = rows.get(number)
        lineage = _lineage(row, number, model_name)
        status = row.status if row is not None else ("live" if live == FIRST else "standby")
        generations.append({
            "generation": number, "topic": row.topic if row is not None else generation_topic(base_topic, number),
            "status": status, "live": number == live, "lineage": lineage,
            "champion": champions.get(lineage) if lineage else None, "rebuild_id": row.rebuild_id if row else None,
            "changed_at": iso(row.changed_at) if row is not None else None,
        })
    served = next((g["lineage"] for g in generations if g["live"] and g["lineage"]), model_name)
    newest = rebuilds[0] if rebuilds else None
    return {
        "base_topic": base_topic, "model_name": model_name, "live": live, "served_by": served,
        "served_version": champions.get(served),
        "pointer": None if pointer is None else {
            "previous": pointer.previous_generation, "changed_by": pointer.changed_by, "reason": pointer.reason,
            "changed_at": iso(pointer.changed_at)},
        "generations": generations,
        "rebuilds": [_rebuild(r) for r in rebuilds],
        "curves": _curves(sessions, newest, served, max_points) if newest is not None else None,
    }


def _rebuild(row: db.Rebuild) -> dict[str, Any]:
    return {
        "id": row.id, "generation": row.generation, "topic": row.topic, "lineage": row.lineage,
        "model_name": row.model_name, "state": row.state, "reason": row.reason, "requested_by": row.requested_by,
        "requests": len(row.requests or []), "files_planned": row.files_planned, "files_ingested": row.files_ingested,
        "rows_ingested": int(row.rows_ingested), "files_left_out": len(row.files_left_out or []),
        "records_trained": int(row.records_trained), "trained_up_to": row.trained_up_to or {},
        "candidate_version": row.candidate_version, "gate": _gate(row.gate), "decision": row.decision,
        "decision_reason": row.decision_reason, "message": row.message, "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at), "decided_at": iso(row.decided_at),
    }


def _curves(sessions: sessionmaker[Session], rebuild: db.Rebuild, served: str, max_points: int) -> dict[str, Any]:
    """The window accuracy over event time of the rebuild's lineage and of the lineage serving now (or, once the
    rebuild is live, of the lineage it replaced)."""
    other = served if served != rebuild.lineage else lineage_name(rebuild.model_name, rebuild.from_generation)
    out = {}
    for key, lineage in (("rebuild", rebuild.lineage), ("live", other)):
        curve = accuracy_curve(sessions, model_name=lineage, x_axis="event_time", max_points=max_points)
        series = curve["series"].get("window_accuracy") or {"x": [], "y": []}
        out[key] = {"lineage": lineage, "x": list(series["x"]), "y": list(series["y"]),
                    "batches": curve["total_batches"]}
    return out
