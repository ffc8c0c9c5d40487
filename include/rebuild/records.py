"""The rebuild records (table ``rebuilds``): requested, joined, their progress and their decision.

A rebuild builds generation ``N`` of a base topic for one model name (its lineage ``<model>.gN``). At most one is
active per base topic: the row's ``active_key`` is the base topic while it is active and NULL after, under a unique
constraint, so two requests at once cannot both start one; the second **joins** the first (its who, why and files
are appended to ``requests``). States: ``requested`` -> ``ingesting`` -> ``training`` -> ``gating`` -> ``switched``
(:func:`include.lifecycle.generations.switch` records it, with the pointer) | ``rejected`` (:func:`reject`) |
``cancelled`` (:func:`cancel`). Every write is one transaction; a retried step writes the same values again.
Never touches Kafka.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from include.history import db
from include.lifecycle.generations import ensure_first, generation_topic, lineage_name, next_generation
from include.lifecycle.registry import LifecycleError

log = logging.getLogger(__name__)

ACTIVE_STATES = ("requested", "ingesting", "training", "gating")
FINAL_STATES = ("switched", "rejected", "cancelled")
STATES = ACTIVE_STATES + FINAL_STATES


@dataclass(frozen=True)
class RebuildInfo:
    """One rebuild as recorded (see :class:`include.history.db.Rebuild`)."""

    id: int
    base_topic: str
    generation: int
    topic: str
    model_name: str
    lineage: str
    from_generation: int
    state: str
    reason: str
    requested_by: str
    requests: list[dict[str, Any]]
    files_planned: int
    files_ingested: int
    rows_ingested: int
    files_left_out: list[dict[str, Any]]
    trained_up_to: dict[str, int]
    records_trained: int
    candidate_version: int | None
    gate: dict[str, Any] | None
    decision: str | None
    decision_reason: str | None
    message: str | None
    created_at: datetime
    updated_at: datetime
    decided_at: datetime | None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in ("created_at", "updated_at", "decided_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


def rebuild_info(row: db.Rebuild) -> RebuildInfo:
    return RebuildInfo(
        id=row.id, base_topic=row.base_topic, generation=row.generation, topic=row.topic, model_name=row.model_name,
        lineage=row.lineage, from_generation=row.from_generation, state=row.state, reason=row.reason,
        requested_by=row.requested_by, requests=list(row.requests or []), files_planned=row.files_planned,
        files_ingested=row.files_ingested, rows_ingested=int(row.rows_ingested),
        files_left_out=list(row.files_left_out or []),
        trained_up_to={str(k): int(v) for k, v in (row.trained_up_to or {}).items()},
        records_trained=int(row.records_trained), candidate_version=row.candidate_version,
        gate=dict(row.gate) if row.gate else None, decision=row.decision, decision_reason=row.decision_reason,
        message=row.message, created_at=row.created_at, updated_at=row.updated_at, decided_at=row.decided_at,
    )


def request(sessions, base_topic: str, model_name: str, *, reason: str, actor: str,
            files: Iterable[str] = ()) -> tuple[RebuildInfo, bool]:
    """Start a rebuild of ``base_topic``'s next generation for ``model_name``, or join the active one.

    Returns:
        The rebuild, and whether the request joined one that was active already.
    """
    entry = {"by": actor, "reason": reason, "files": sorted(set(files))}
    for _ in range(5):
        try:
            with sessions.begin() as session:
                active = session.scalars(select(db.Rebuild).where(db.Rebuild.active_key == base_topic)).first()
                if active is not None:
                    if not any({k: e.get(k) for k in entry} == entry for e in active.requests or []):
                        active.requests = [*(active.requests or []), {**entry, "at": db.utcnow().isoformat()}]
                        active.updated_at = db.utcnow()
                    log.info("rebuild %d of %s (generation %d) is running: this request joins it", active.id,
                             base_topic, active.generation)
                    return rebuild_info(active), True
                started = _start(session, base_topic, model_name, reason=reason, actor=actor, entry=entry)
                return rebuild_info(started), False
        except IntegrityError:  # another request started one at the same moment: join it
            log.info("another rebuild request of %s started at the same time; joining it", base_topic)
    raise LifecycleError(f"could not start or join a rebuild of {base_topic!r}: the database kept refusing")


def _start(session, base_topic: str, model_name: str, *, reason: str, actor: str, entry: dict) -> db.Rebuild:
    live = ensure_first(session, base_topic, actor=actor)
    generation = next_generation(session, base_topic)
    now = db.utcnow()
    row = db.Rebuild(
        base_topic=base_topic, generation=generation, topic=generation_topic(base_topic, generation),
        model_name=model_name, lineage=lineage_name(model_name, generation), from_generation=live,
        active_key=base_topic, state="requested", reason=reason, requested_by=actor,
        requests=[{**entry, "at": now.isoformat()}], files_planned=0, files_ingested=0, rows_ingested=0,
        files_left_out=[], trained_up_to={}, records_trained=0, created_at=now, updated_at=now,
        message="requested: waiting for the rebuild_model DAG (or `python -m include rebuild run`)",
    )
    session.add(row)
    session.flush()
    session.add(db.Generation(base_topic=base_topic, generation=generation, topic=row.topic, model_name=model_name,
                              lineage=row.lineage, status="rebuilding", rebuild_id=row.id, created_at=now,
                              changed_at=now))
    session.flush()
    log.info("rebuild %d of %s started: generation %d (topic %s, lineage %s); %s", row.id, base_topic, generation,
             row.topic, row.lineage, reason)
    return row


def active(sessions, base_topic: str) -> RebuildInfo | None:
    """The active rebuild of ``base_topic``, or None."""
    with sessions() as session:
        row = session.scalars(select(db.Rebuild).where(db.Rebuild.active_key == base_topic)).first()
    return rebuild_info(row) if row is not None else None


def get(sessions, rebuild_id: int) -> RebuildInfo:
    with sessions() as session:
        row = session.get(db.Rebuild, int(rebuild_id))
    if row is None:
        raise LifecycleError(f"there is no rebuild {rebuild_id}; `python -m include rebuild status` lists them")
    return rebuild_info(row)


def all_of(sessions, base_topic: str) -> list[RebuildInfo]:
    """Every rebuild of ``base_topic``, newest first."""
    with sessions() as session:
        rows = session.scalars(select(db.Rebuild).where(db.Rebuild.base_topic == base_topic)
                               .order_by(db.Rebuild.id.desc())).all()
    return [rebuild_info(r) for r in rows]


def update(sessions, rebuild_id: int, **fields: Any) -> RebuildInfo:
    """Record progress of an active rebuild (state, counts, message...); a finished one is left as it is."""
    unknown = set(fields) - set(db.Rebuild.__table__.columns.keys())
    if unknown:
        raise ValueError(f"not rebuild fields: {sorted(unknown)}")
    if "state" in fields and fields["state"] not in ACTIVE_STATES:
        raise ValueError(f"update() sets active states only, not {fields['state']!r}")
    with sessions.begin() as session:
        row = session.get(db.Rebuild, int(rebuild_id))
        if row is None:
            raise LifecycleError(f"there is no rebuild {rebuild_id}")
        if row.state in ACTIVE_STATES:
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_at = db.utcnow()
        return rebuild_info(row)


def reject(sessions, rebuild_id: int, *, reason: str, gate: dict[str, Any] | None,
           candidate_version: int | None) -> RebuildInfo:
    """The gate said no: the rebuild is ``rejected`` with its reason and numbers, its generation ``rejected``; the
    live generation is untouched. Idempotent."""
    return _finish(sessions, rebuild_id, state="rejected", decision="reject", reason=reason, gate=gate,
                   candidate_version=candidate_version)


def cancel(sessions, rebuild_id: int, *, actor: str, reason: str) -> RebuildInfo:
    """A person stops an active rebuild; its generation becomes ``rejected`` (never live)."""
    return _finish(sessions, rebuild_id, state="cancelled", decision=None, reason=f"{reason} (by {actor})", gate=None,
                   candidate_version=None)


def _finish(sessions, rebuild_id: int, *, state: str, decision: str | None, reason: str,
            gate: dict[str, Any] | None, candidate_version: int | None) -> RebuildInfo:
    with sessions.begin() as session:
        row = session.get(db.Rebuild, int(rebuild_id))
        if row is None:
            raise LifecycleError(f"there is no rebuild {rebuild_id}")
        if row.state in ACTIVE_STATES:
            now = db.utcnow()
            row.state, row.active_key, row.decision, row.decision_reason = state, None, decision, reason
            row.gate, row.candidate_version, row.decided_at, row.updated_at = gate, candidate_version, now, now
            row.message = reason
            generation = session.get(db.Generation, (row.base_topic, row.generation))
            if generation is not None and generation.status == "rebuilding":
                generation.status, generation.changed_at = "rejected", now
            log.info("rebuild %d of %s: %s (%s)", row.id, row.base_topic, state, reason)
        return rebuild_info(row)
