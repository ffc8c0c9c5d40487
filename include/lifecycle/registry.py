"""The versions and the champion as the database records them: what every reader of the lifecycle asks.

:class:`Registry` answers "which version is the champion", "what is version N" and "which versions are there"
from the ``model_versions`` and ``model_pointers`` tables; :class:`VersionInfo` is its answer. The champion
pointer and the versions' statuses change together in one transaction (:mod:`include.lifecycle.promotion`), so
a reader never sees two champions or none after the first. This module only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from include.history import db
from include.lifecycle.store import VersionStore
from include.settings import Settings

STATUSES = ("candidate", "champion", "rejected", "retired", "superseded")


class LifecycleError(RuntimeError):
    """A lifecycle request that cannot be met (no such version, nothing to roll back to...): the message says why."""


@dataclass(frozen=True)
class VersionInfo:
    """One model version as recorded (see :class:`include.history.db.ModelVersion`), with its files."""

    model_name: str
    version: int
    status: str
    checkpoint_id: str
    run_id: str | None
    schema_id: str
    topic: str
    offsets: dict[str, Any]
    records_total: int
    event_time_min: int | None
    event_time_max: int | None
    metrics: dict[str, Any]
    gate: dict[str, Any] | None
    reason: str | None
    created_at: datetime
    decided_at: datetime | None
    files_removed_at: datetime | None
    path: Path

    @property
    def keras_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def saved_model_dir(self) -> Path:
        return self.path

    @property
    def on_disk(self) -> bool:
        return self.files_removed_at is None and self.keras_path.is_file()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (times as ISO 8601)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in ("created_at", "decided_at", "files_removed_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        out["path"] = str(self.path)
        return out


def version_info(row: db.ModelVersion) -> VersionInfo:
    return VersionInfo(
        model_name=row.model_name, version=row.version, status=row.status, checkpoint_id=row.checkpoint_id,
        run_id=row.run_id, schema_id=row.schema_id, topic=row.topic, offsets=dict(row.offsets or {}),
        records_total=row.records_total, event_time_min=row.event_time_min, event_time_max=row.event_time_max,
        metrics=dict(row.metrics or {}), gate=dict(row.gate) if row.gate else None, reason=row.reason,
        created_at=row.created_at, decided_at=row.decided_at, files_removed_at=row.files_removed_at,
        path=Path(row.path),
    )


class Registry:
    """Read the lifecycle's tables.

    Args:
        settings: Project settings (database URL, models folder).
        migrate: Bring the database schema up to date first (writers); readers that must not migrate (the UI
            plugin) pass False and get :class:`include.history.db.HistoryNotReady` if it is not.
    """

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        if not migrate:
            db.check_ready(settings.db_url)
        self.sessions = db.session_factory(settings.db_url, migrate=migrate)

    def store(self, model_name: str) -> VersionStore:
        return VersionStore(self.settings.models_dir, model_name)

    def champion_version(self, model_name: str) -> int | None:
        """The served version's number (one primary-key read: cheap enough to poll every few hundred ms)."""
        with self.sessions() as session:
            pointer = session.get(db.ModelPointer, model_name)
            return pointer.champion_version if pointer is not None else None

    def served(self, model_name: str) -> tuple[str, int | None]:
        """The lineage that serves ``model_name`` in the live generation of ``RETRAIN_TOPIC`` and its champion version
        (:func:`include.lifecycle.generations.served`: a few primary-key reads, cheap enough to poll)."""
        from include.lifecycle.generations import served

        return served(self.sessions, self.settings.topic, model_name)

    def champion(self, model_name: str) -> VersionInfo | None:
        """The served version, or None before the first version."""
        version = self.champion_version(model_name)
        return None if version is None else self.get(model_name, version)

    def get(self, model_name: str, version: int) -> VersionInfo:
        """Version ``version`` of ``model_name``.

        Raises:
            LifecycleError: There is no such version.
        """
        with self.sessions() as session:
            row = session.get(db.ModelVersion, (model_name, int(version)))
        if row is None:
            raise LifecycleError(f"model {model_name!r} has no version {version}; "
                                 f"`python -m include models list --model-name {model_name}` shows its versions")
        return version_info(row)

    def versions(self, model_name: str) -> list[VersionInfo]:
        """All versions of ``model_name``, newest first."""
        with self.sessions() as session:
            rows = session.scalars(select(db.ModelVersion).where(db.ModelVersion.model_name == model_name)
                                   .order_by(db.ModelVersion.version.desc())).all()
        return [version_info(r) for r in rows]

    def model_names(self) -> list[str]:
        """Every model name with at least one version."""
        with self.sessions() as session:
            return list(session.scalars(select(db.ModelVersion.model_name).distinct().order_by(db.ModelVersion.model_name)))

    def resolve(self, model_name: str, version: int | None = None) -> VersionInfo:
        """Version ``version``, or the champion when None; its files must be on disk.

        Raises:
            LifecycleError: No champion yet, no such version, or its files were pruned.
        """
        info = self.get(model_name, version) if version is not None else self.champion(model_name)
        if info is None:
            raise LifecycleError(f"model {model_name!r} has no champion yet: train it first "
                                 "(`python -m include train`, or the train_model DAG)")
        if not info.on_disk:
            raise LifecycleError(f"version {info.version} of {model_name!r} is no longer on disk (kept: the newest "
                                 f"RETRAIN_KEEP_VERSIONS, the champion and the one before it)")
        return info

    def events(self, model_name: str, version: int | None = None) -> list[dict[str, Any]]:
        """The audit trail of ``model_name`` (of one version when given), oldest first, as JSON-able dicts."""
        query = select(db.ModelEvent).where(db.ModelEvent.model_name == model_name)
        if version is not None:
            query = query.where(db.ModelEvent.version == int(version))
        with self.sessions() as session:
            rows = session.scalars(query.order_by(db.ModelEvent.id)).all()
        return [{"version": r.version, "action": r.action, "actor": r.actor, "reason": r.reason, "details": r.details,
                 "at": r.created_at.isoformat()} for r in rows]
