"""Registering a model version: export the model into its folder, then record it.

:func:`register_version` is idempotent on the checkpoint: a retried registration of the same checkpoint returns the
version it made. The order is crash-safe: the folder is built under a temporary name and renamed into place
(:mod:`include.lifecycle.store`), then the row is inserted; a crash between the two leaves an orphan folder that
the next registration of that number replaces. The first version of a model name becomes its champion in the same
transaction (nothing to compare it with); every later one is a ``candidate`` for the promotion gate.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select

from include import faults
from include.durable import fsync_tree
from include.history import db
from include.lifecycle.registry import Registry, VersionInfo, version_info
from include.lifecycle.store import KERAS_FILE, META_FILE

log = logging.getLogger(__name__)

HOLDOUT_FILE = "holdout.npz"
SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class VersionSource:
    """What a version is made from: the checkpoint's facts and the run's measurements.

    Attributes:
        checkpoint_id: The checkpoint the model comes from (one version per checkpoint).
        run_id: The training run that wrote it.
        schema_id: The schema the model reads.
        topic: The topic it trained on.
        offsets: ``{partition: next offset}`` it has trained up to.
        records_total: Records trained over all runs.
        event_time_min: Oldest event time (epoch ms) it has trained on, if known.
        event_time_max: Newest event time (epoch ms) it has trained on, if known.
        metrics: Its accuracies when it was written (window, prequential).
        holdout: ``(x, y)`` raw rows held out by its run (never trained), kept with the version for the gate.
    """

    checkpoint_id: str
    run_id: str | None
    schema_id: str
    topic: str
    offsets: dict[str, int]
    records_total: int
    event_time_min: int | None = None
    event_time_max: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    holdout: tuple[np.ndarray, np.ndarray] | None = None


def register_version(registry: Registry, model_name: str, model: Any, source: VersionSource,
                     *, actor: str = SYSTEM_ACTOR) -> VersionInfo:
    """Export ``model`` as the next version of ``model_name`` and record it (or return the checkpoint's version).

    Args:
        registry: The registry (its settings name the models folder and the database).
        model_name: The model name.
        model: The Keras model to export (not changed).
        source: What the version is made from.
        actor: Recorded in the audit trail.

    Returns:
        The version: ``champion`` if it is the model's first, else ``candidate``.
    """
    existing = version_for_checkpoint(registry, model_name, source.checkpoint_id)
    if existing is not None:
        return existing
    store = registry.store(model_name)
    store.clean_temp_dirs()
    with registry.sessions() as session:
        version = int(session.scalar(select(func.max(db.ModelVersion.version))
                                     .where(db.ModelVersion.model_name == model_name)) or 0) + 1
    temp = store.new_temp_dir(version)
    _export(model, temp, model_name, version, source)
    faults.reached("version_after_export")
    final = store.publish(temp, version)
    faults.reached("version_after_publish")
    with registry.sessions.begin() as session:
        first = session.get(db.ModelPointer, model_name) is None
        status = "champion" if first else "candidate"
        now = db.utcnow()
        session.add(db.ModelVersion(
            model_name=model_name, version=version, checkpoint_id=source.checkpoint_id, run_id=source.run_id,
            schema_id=source.schema_id, topic=source.topic, offsets={str(k): int(v) for k, v in source.offsets.items()},
            records_total=int(source.records_total), event_time_min=source.event_time_min,
            event_time_max=source.event_time_max, path=str(final), metrics=_finite(source.metrics), status=status,
            reason="the first version of this model name" if first else None, created_at=now,
            decided_at=now if first else None,
        ))
        session.add(db.ModelEvent(model_name=model_name, event_key=f"registered:{version}", version=version,
                                  action="registered", actor=actor, reason=f"from checkpoint {source.checkpoint_id}",
                                  details={"status": status}, created_at=now))
        if first:
            session.add(db.ModelPointer(model_name=model_name, champion_version=version, previous_version=None,
                                        changed_by=actor, reason="the first version is the champion", changed_at=now))
            session.add(db.ModelEvent(model_name=model_name, event_key=f"promoted:{version}:first", version=version,
                                      action="promoted", actor=actor, reason="the first version is the champion",
                                      created_at=now))
    log.info("model %s version %d registered (%s) from checkpoint %s", model_name, version, status,
             source.checkpoint_id)
    return registry.get(model_name, version)


def load_holdout(info: VersionInfo) -> tuple[np.ndarray, np.ndarray] | None:
    """The held-out rows a version's run kept (None if it kept none)."""
    path = info.path / HOLDOUT_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return data["x"], data["y"]


def version_for_checkpoint(registry: Registry, model_name: str, checkpoint_id: str) -> VersionInfo | None:
    """The version made from ``checkpoint_id``, or None."""
    with registry.sessions() as session:
        row = session.scalar(select(db.ModelVersion).where(db.ModelVersion.model_name == model_name,
                                                           db.ModelVersion.checkpoint_id == checkpoint_id))
    return version_info(row) if row is not None else None


def _export(model: Any, folder: Any, model_name: str, version: int, source: VersionSource) -> None:
    """SavedModel (TF Serving's files) + ``model.keras`` + ``holdout.npz`` + ``version.json``, all fsynced."""
    model.export(str(folder), format="tf_saved_model", verbose=False)
    faults.reached("version_mid_export")
    model.save(str(folder / KERAS_FILE))
    if source.holdout is not None:
        x, y = source.holdout
        np.savez(folder / HOLDOUT_FILE, x=np.asarray(x, np.float32), y=np.asarray(y, np.float32))
    meta = {"model_name": model_name, "version": version, "checkpoint_id": source.checkpoint_id,
            "run_id": source.run_id, "schema_id": source.schema_id, "topic": source.topic,
            "offsets": source.offsets, "records_total": source.records_total,
            "event_time_min": source.event_time_min, "event_time_max": source.event_time_max,
            "metrics": _finite(source.metrics)}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    fsync_tree(folder)


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe: NaN and infinities become None."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        out[key] = value
    return out
