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
from include.kafka.records import Records
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


def batch_rows(identity: RunIdentity, records: Records, sizes: Sequence[int], metrics: Sequence[Any], *, seq: int,
               index: int) -> list[dict[str, Any]]:
    """The ``batch_metrics`` rows of consecutive trained mini-batches.

    Args:
        identity: The run.
        records: The mini-batches' messages, one after the other, in order.
        sizes: Messages per mini-batch (summing to ``len(records)``).
        metrics: Each mini-batch's :class:`include.training.learner_config.BatchMetrics`.
        seq: Records the model had trained before the first mini-batch.
        index: The first mini-batch's position in this run.
    """
    spans = _spans(records, sizes)
    rows = []
    for k, ((first, last, t_min, t_max), size, m) in enumerate(zip(spans, sizes, metrics)):
        # The tfio reader cannot see offsets: its rows are keyed by run and index (see include.kafka.tfio_reader).
        key = ",".join(f"p{p}:{o}" for p, o in sorted(first.items())) or f"tfio:{identity.run_id}:{index + k}"
        rows.append({
            "model_name": identity.model_name,
            "batch_key": key,
            "run_id": identity.run_id, "kind": identity.kind, "seq": seq, "batch_index": index + k,
            "offsets_from": jsonable_offsets(first), "offsets_to": jsonable_offsets({p: o + 1 for p, o in last.items()}),
            "n": int(size), "n_train": int(m.n_train), "n_eval": int(m.n_eval), "loss": finite(m.loss),
            "train_accuracy": finite(m.train_accuracy), "window_accuracy": finite(m.window_accuracy),
            "prequential_accuracy": finite(m.prequential_accuracy), "event_time_min": t_min, "event_time_max": t_max,
        })
        seq += int(size)
    return rows


def _spans(records: Records, sizes: Sequence[int]) -> list[tuple[dict[int, int], dict[int, int], int | None, int | None]]:
    """Per mini-batch: the first and the last known offset of each partition in it (in consumption order) and the
    oldest and newest timestamp (None: no message has one). Numpy per partition, not Python per message."""
    sizes_a = np.asarray(sizes, dtype=np.int64)
    k = sizes_a.size
    if int(sizes_a.sum()) != len(records):
        raise ValueError(f"mini-batch sizes add up to {int(sizes_a.sum())}, not {len(records)} records")
    batch_of = np.repeat(np.arange(k), sizes_a)
    firsts: list[dict[int, int]] = [{} for _ in range(k)]
    lasts: list[dict[int, int]] = [{} for _ in range(k)]
    known = records.offsets >= 0
    for p in np.unique(records.partitions[known]).tolist():
        rows = np.flatnonzero(known & (records.partitions == p))
        batches = batch_of[rows]
        begins = np.flatnonzero(np.r_[True, batches[1:] != batches[:-1]])
        finals = np.r_[begins[1:], rows.size] - 1
        for b, o_first, o_last in zip(batches[begins].tolist(), records.offsets[rows[begins]].tolist(),
                                      records.offsets[rows[finals]].tolist()):
            firsts[b][p] = o_first
            lasts[b][p] = o_last
    t_min: list[int | None] = [None] * k
    t_max: list[int | None] = [None] * k
    filled = np.flatnonzero(sizes_a > 0)
    if filled.size:
        starts = (np.cumsum(sizes_a) - sizes_a)[filled]
        big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        timed = np.add.reduceat(records.timed.astype(np.int64), starts) > 0
        lows = np.minimum.reduceat(np.where(records.timed, records.timestamps, big), starts)
        highs = np.maximum.reduceat(np.where(records.timed, records.timestamps, small), starts)
        for b, has, lo, hi in zip(filled.tolist(), timed.tolist(), lows.tolist(), highs.tolist()):
            if has:
                t_min[b], t_max[b] = lo, hi
    return list(zip(firsts, lasts, t_min, t_max))


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
