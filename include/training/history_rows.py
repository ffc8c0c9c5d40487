"""The rows a training run writes to the history database, and the one transaction that upserts them.

Owns: the shape of the ``batch_metrics`` row of a mini-batch, the ``drift_events`` row of a detection, the
``checkpoint_records`` row of a checkpoint and the ``training_runs`` row of a run, each built from the run's facts
(:class:`RunIdentity`), and :class:`RunHistory`, which upserts any of them in one transaction. Every row has a
natural key, so writing it again (a resumed run finishing its predecessor's work) replaces it.

Never decides when rows are written (:mod:`include.training.trainer` and :mod:`include.training.durability` do)
and never talks to Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from sqlalchemy import func, select, update

from include.history import db
from include.kafka.reader import Message
from include.training.options import TrainSummary

# Rows per upsert statement: SQLite limits bound parameters per statement.
_UPSERT_ROWS = 500


@dataclass(frozen=True)
class RunIdentity:
    """Who trains what: the facts every row of one run repeats."""

    run_id: str
    kind: str  # incremental (the trainer) | batch_baseline
    model_name: str
    schema_id: str
    topic: str
    consumer_group: str
    reader: str
    mode: str
    dag_id: str | None
    dag_run_id: str | None


def jsonable_offsets(offsets: Mapping[int, int]) -> dict[str, int]:
    """``{partition: offset}`` as JSON keeps it: string keys, sorted."""
    return {str(p): int(o) for p, o in sorted(offsets.items())}


def int_offsets(offsets: Mapping[str, int] | None) -> dict[int, int]:
    """The inverse of :func:`jsonable_offsets` (None: no offsets)."""
    return {int(p): int(o) for p, o in (offsets or {}).items()}


def finite(value: float | None) -> float | None:
    """``value`` as a float, or None when it is missing or not finite (the database stores no NaN)."""
    return None if value is None or not np.isfinite(value) else float(value)


def batch_row(identity: RunIdentity, batch: Sequence[Message], metrics: Any, *, seq: int, index: int) -> dict[str, Any]:
    """The ``batch_metrics`` row of one trained mini-batch.

    Args:
        identity: The run.
        batch: The mini-batch's messages, in order.
        metrics: Its :class:`include.training.learner_config.BatchMetrics`.
        seq: Records the model had trained before this mini-batch.
        index: The mini-batch's position in this run.
    """
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    times = [msg.timestamp_ms for msg in batch if msg.timestamp_ms is not None]
    for msg in batch:
        if msg.offset >= 0:
            first.setdefault(msg.partition, msg.offset)
            last[msg.partition] = msg.offset
    # The tfio reader cannot see offsets: its rows are keyed by run and index (see include.kafka.tfio_reader).
    key = ",".join(f"p{p}:{o}" for p, o in sorted(first.items())) or f"tfio:{identity.run_id}:{index}"
    return {
        "model_name": identity.model_name,
        "batch_key": key,
        "run_id": identity.run_id, "kind": identity.kind, "seq": seq, "batch_index": index,
        "offsets_from": jsonable_offsets(first), "offsets_to": jsonable_offsets({p: o + 1 for p, o in last.items()}),
        "n": len(batch), "n_train": int(metrics.n_train), "n_eval": int(metrics.n_eval), "loss": finite(metrics.loss),
        "train_accuracy": finite(metrics.train_accuracy), "window_accuracy": finite(metrics.window_accuracy),
        "prequential_accuracy": finite(metrics.prequential_accuracy),
        "event_time_min": min(times) if times else None, "event_time_max": max(times) if times else None,
    }


def drift_row(identity: RunIdentity, row: Mapping[str, Any], detection: Any) -> dict[str, Any]:
    """A drift event, keyed like the mini-batch row ``row`` whose metrics fired ``detection``."""
    return {
        "model_name": row["model_name"], "batch_key": row["batch_key"], "run_id": identity.run_id, "seq": row["seq"],
        "offsets": row["offsets_from"], "event_time": row["event_time_max"], "detector": detection.detector,
        "accuracy_before": finite(detection.accuracy_before), "accuracy_after": finite(detection.accuracy_after),
        "reaction": detection.reaction,
    }


def checkpoint_row(identity: RunIdentity, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``checkpoint_records`` row of a checkpoint from its meta (this run's or a predecessor's)."""
    return {
        "checkpoint_id": meta["checkpoint_id"], "model_name": identity.model_name, "run_id": meta.get("run_id"),
        "seq": int(meta["seq"]), "path": str(meta.get("path", "")), "offsets": meta.get("offsets", {}),
        "records_total": int(meta.get("records_total", 0)), "schema_id": meta.get("schema_id", identity.schema_id),
    }


def run_row(identity: RunIdentity, summary: TrainSummary, *, ended: bool) -> dict[str, Any]:
    """The ``training_runs`` row of this run as ``summary`` says now; ``ended`` stamps its end time."""
    return {
        "run_id": identity.run_id, "kind": identity.kind, "model_name": identity.model_name, "dag_id": identity.dag_id,
        "dag_run_id": identity.dag_run_id, "topic": identity.topic, "consumer_group": identity.consumer_group,
        "reader": identity.reader, "mode": identity.mode, "status": summary.status,
        "stop_reason": summary.stop_reason, "offsets_from": summary.offsets_from, "offsets_to": summary.offsets_to,
        "end_offsets_at_start": summary.end_offsets_at_start, "records": summary.records, "poison": summary.poison,
        "batches": summary.batches, "checkpoint_from": summary.checkpoint_from, "checkpoint_id": summary.checkpoint_id,
        "window_accuracy": summary.window_accuracy, "prequential_accuracy": summary.prequential_accuracy,
        "ended_at": db.utcnow() if ended else None,
    }


class RunHistory:
    """One run's writes to the history database.

    Args:
        sessions: The database's session factory (:func:`include.history.db.session_factory`).
        identity: The run.
    """

    def __init__(self, sessions: Any, identity: RunIdentity) -> None:
        self.sessions = sessions
        self.identity = identity

    def write(self, batches: Sequence[Mapping[str, Any]] = (), *, checkpoint: Mapping[str, Any] | None = None,
              run: Mapping[str, Any] | None = None, drift_events: Iterable[Mapping[str, Any]] = ()) -> None:
        """Upsert mini-batch rows, a checkpoint row, a run row and drift events in one transaction."""
        with self.sessions.begin() as session:
            if run is not None:
                db.upsert(session, db.TrainingRun, [run], keys=("run_id",))
            for i in range(0, len(batches), _UPSERT_ROWS):
                db.upsert(session, db.BatchMetric, batches[i:i + _UPSERT_ROWS], keys=("model_name", "batch_key"))
            db.upsert(session, db.DriftEvent, drift_events, keys=("model_name", "batch_key"))
            if checkpoint is not None:
                db.upsert(session, db.CheckpointRecord, [checkpoint], keys=("checkpoint_id",))

    def record_run(self, summary: TrainSummary, *, ended: bool, message: str | None = None) -> None:
        """Upsert this run's ``training_runs`` row alone (``message``: why it failed)."""
        row = run_row(self.identity, summary, ended=ended)
        if message is not None:
            row["message"] = message
        self.write(run=row)

    def event_time_range(self) -> tuple[int | None, int | None]:
        """The oldest and newest event time of this model's recorded mini-batches (for checkpoints older than the
        ``coverage`` they now carry)."""
        with self.sessions() as session:
            low, high = session.execute(
                select(func.min(db.BatchMetric.event_time_min), func.max(db.BatchMetric.event_time_max))
                .where(db.BatchMetric.model_name == self.identity.model_name, db.BatchMetric.kind == "incremental")
            ).one()
        return low, high

    def close_stale_runs(self) -> None:
        """Mark this model's runs still 'running' as failed: they belong to crashed trainers.

        Only safe while holding the trainer lock (:mod:`include.training.lock`): no other trainer is running.
        """
        with self.sessions.begin() as session:
            session.execute(
                update(db.TrainingRun)
                .where(db.TrainingRun.model_name == self.identity.model_name, db.TrainingRun.status == "running")
                .values(status="failed", message="the trainer process died; a later run resumed from its checkpoint")
            )
