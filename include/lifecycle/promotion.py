"""Changing a version's status: promotion and rollback (the champion), reject, supersede and defer (a candidate).

Each is one database transaction with its audit row (``model_events``: who, why).

The pointer (``model_pointers``), the versions' statuses (the old champion ``retired``, the new one ``champion``)
and the event (who, why) change together or not at all, so a crash leaves the old champion or the new one, and a
reader (the server polls the pointer) never sees a half switch. Both are idempotent: promoting the champion again
changes nothing. This module never scores: the gate (:mod:`include.lifecycle.gate`) decides, this applies.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from include import faults
from include.history import db
from include.lifecycle.registry import LifecycleError, Registry, VersionInfo

log = logging.getLogger(__name__)


def promote(registry: Registry, model_name: str, version: int, *, actor: str, reason: str,
            gate: dict[str, Any] | None = None, event_key: str | None = None) -> VersionInfo:
    """Make ``version`` the champion (by the gate, or by hand).

    Args:
        registry: The registry.
        model_name: The model name.
        version: The version to serve; its files must be on disk and it must not be rejected by the gate unless
            a person promotes it (``actor`` is then recorded as having overridden it).
        actor: Who: ``gate`` for the promotion gate, a user name for a person.
        reason: Why (recorded, shown in the UI).
        gate: The gate's numbers, recorded on the version.
        event_key: Idempotence key of the audit row (default: one per version promoted from each champion).

    Raises:
        LifecycleError: No such version, or its files were pruned.
    """
    return _switch(registry, model_name, version, actor=actor, reason=reason, action="promoted", gate=gate,
                   event_key=event_key)


def rollback(registry: Registry, model_name: str, *, actor: str, reason: str,
             to_version: int | None = None) -> VersionInfo:
    """Serve the previous champion again (or ``to_version``, any earlier version still on disk).

    Raises:
        LifecycleError: Nothing to roll back to, or its files were pruned.
    """
    if to_version is None:
        with registry.sessions() as session:
            pointer = session.get(db.ModelPointer, model_name)
        if pointer is None or pointer.previous_version is None:
            raise LifecycleError(f"model {model_name!r} has no earlier champion to roll back to; "
                                 "`python -m include models promote --version N` serves any version on disk")
        to_version = pointer.previous_version
    return _switch(registry, model_name, to_version, actor=actor, reason=reason, action="rolled_back", gate=None,
                   event_key=None)


def _switch(registry: Registry, model_name: str, version: int, *, actor: str, reason: str, action: str,
            gate: dict[str, Any] | None, event_key: str | None) -> VersionInfo:
    target = registry.get(model_name, version)
    if not target.on_disk:
        raise LifecycleError(f"version {version} of {model_name!r} is no longer on disk: it cannot be served")
    faults.reached("promotion_before_switch")
    with registry.sessions.begin() as session:
        pointer = session.execute(select(db.ModelPointer).where(db.ModelPointer.model_name == model_name)
                                  .with_for_update()).scalar_one_or_none()
        current = pointer.champion_version if pointer is not None else None
        if current == target.version:
            return target
        now = db.utcnow()
        row = session.get(db.ModelVersion, (model_name, target.version))
        if current is not None:
            old = session.get(db.ModelVersion, (model_name, current))
            if old is not None:
                old.status = "retired"
        row.status = "champion"
        row.decided_at = now
        row.reason = reason
        if gate is not None:
            row.gate = gate
        if pointer is None:
            session.add(db.ModelPointer(model_name=model_name, champion_version=target.version,
                                        previous_version=None, changed_by=actor, reason=reason, changed_at=now))
        else:
            pointer.previous_version, pointer.champion_version = current, target.version
            pointer.changed_by, pointer.reason, pointer.changed_at = actor, reason, now
        session.add(db.ModelEvent(
            model_name=model_name, event_key=event_key or f"{action}:{target.version}:from:{current}:{now.isoformat()}",
            version=target.version, action=action, actor=actor, reason=reason,
            details={"from_version": current, **({"gate": gate} if gate else {})}, created_at=now,
        ))
    faults.reached("promotion_after_switch")
    log.info("model %s: version %s -> %d (%s by %s: %s)", model_name, current, target.version, action, actor, reason)
    return registry.get(model_name, target.version)


def reject(registry: Registry, model_name: str, version: int, *, actor: str, reason: str,
           gate: dict[str, Any] | None = None) -> bool:
    """Mark a candidate ``rejected`` (by the gate, or by a person) with its audit row; True if it was a candidate.

    Raises:
        LifecycleError: No such version, or it is the champion (roll back or promote another version first).
    """
    return _decide(registry, model_name, version, status="rejected", action="rejected", actor=actor, reason=reason,
                   gate=gate)


def supersede(registry: Registry, model_name: str, version: int, *, actor: str, reason: str) -> bool:
    """Mark a candidate that was never judged ``superseded`` (a newer one is judged instead); True if it was."""
    return _decide(registry, model_name, version, status="superseded", action="superseded", actor=actor,
                   reason=reason, gate=None)


def defer(registry: Registry, model_name: str, version: int, *, actor: str, reason: str,
          gate: dict[str, Any]) -> None:
    """Record that the gate could not decide yet (too few rows): the version stays a candidate; once per data."""
    key = f"deferred:{version}:on:{gate.get('evaluated_on_version')}"
    with registry.sessions.begin() as session:
        row = session.get(db.ModelVersion, (model_name, int(version)))
        if row is None or row.status != "candidate" or _has_event(session, model_name, key):
            return
        row.gate, row.reason = gate, reason
        session.add(db.ModelEvent(model_name=model_name, event_key=key, version=row.version, action="deferred",
                                  actor=actor, reason=reason, details={"gate": gate}, created_at=db.utcnow()))


def _decide(registry: Registry, model_name: str, version: int, *, status: str, action: str, actor: str, reason: str,
            gate: dict[str, Any] | None) -> bool:
    """A candidate's final status, its gate numbers and the audit row, in one transaction (once)."""
    registry.get(model_name, version)  # LifecycleError if there is no such version
    with registry.sessions.begin() as session:
        row = session.get(db.ModelVersion, (model_name, int(version)))
        if row.status == "champion":
            raise LifecycleError(f"version {version} of {model_name!r} is the champion: roll back or promote another "
                                 "version first")
        if row.status != "candidate":
            return False
        now = db.utcnow()
        row.status, row.reason, row.decided_at = status, reason, now
        if gate is not None:
            row.gate = gate
        session.add(db.ModelEvent(model_name=model_name, event_key=f"{action}:{row.version}", version=row.version,
                                  action=action, actor=actor, reason=reason,
                                  details={"gate": gate} if gate else None, created_at=now))
    log.info("model %s: version %d %s by %s: %s", model_name, version, status, actor, reason)
    return True


def _has_event(session: Any, model_name: str, key: str) -> bool:
    return session.scalar(select(db.ModelEvent.id).where(db.ModelEvent.model_name == model_name,
                                                         db.ModelEvent.event_key == key)) is not None
