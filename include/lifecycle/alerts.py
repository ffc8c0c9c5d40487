"""Alerts: facts a person should hear about, recorded once, then delivered by the notifiers.

:func:`record_alert` writes an ``alerts`` row keyed by ``(model name, alert key)``: recording the same fact again
(a retried task) changes nothing, so each alert is delivered once. Delivery (``notified_at``) is the notifiers'.
Kinds: ``candidate_rejected``, ``drift``, ``accuracy_below_floor``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from include.history import db
from include.lifecycle.registry import Registry

KINDS = ("candidate_rejected", "drift", "accuracy_below_floor")


def record_alert(registry: Registry, model_name: str, kind: str, key: str, message: str, *,
                 version: int | None = None, details: dict[str, Any] | None = None) -> None:
    """Record an alert unless the same ``(model_name, key)`` is recorded already.

    Args:
        registry: The registry (its database).
        model_name: The model it is about.
        kind: One of :data:`KINDS`.
        key: What makes it one fact (e.g. ``rejected:7``, ``drift:<batch key>``).
        message: One line for a person.
        version: The version it is about, if any.
        details: Numbers behind it (JSON-able).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown alert kind {kind!r}")
    try:
        with registry.sessions.begin() as session:
            exists = session.scalar(select(db.Alert.id).where(db.Alert.model_name == model_name,
                                                              db.Alert.alert_key == key))
            if exists is None:
                session.add(db.Alert(model_name=model_name, alert_key=key, kind=kind, version=version,
                                     message=message, details=details, created_at=db.utcnow()))
    except IntegrityError:  # recorded at the same moment by another process: the same fact, once
        pass
