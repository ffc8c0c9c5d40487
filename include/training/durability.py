"""Making trained progress durable: dead letters, then the checkpoint, then the history, then the group's offsets.

Owns: :class:`Progress` (what was trained since the last durable checkpoint) and :meth:`Durability.save`, the one
place that writes, in this order:

1. the dead letters are flushed (the offsets must not move past an undelivered one);
2. the checkpoint bundle, atomically, if the newest checkpoint is still the one this run expects (a
   compare-and-set on its seq: another trainer that advanced it means this run's work is discarded,
   :class:`include.training.options.TrainerBusy`). The bundle carries the pending history rows and drift events;
3. the history rows, drift events, checkpoint record and run row, upserted in one transaction;
4. the offsets, committed to the consumer group.

A crash between any two steps leaves the previous checkpoint or the new one, and the next run redoes steps 3-4 from
the checkpoint it loads (:func:`include.training.resume.finish_predecessor`), so every offset is trained exactly once
and every mini-batch has exactly one history row. Never trains, never reads Kafka, and never commits an offset
before the checkpoint that carries it is on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from include import faults
from include.history import db
from include.kafka.dead_letters import DeadLetters
from include.kafka.reader import BoundedReader
from include.training.checkpoint import CheckpointStore
from include.training.history_rows import RunHistory, checkpoint_row, jsonable_offsets, run_row
from include.training.options import TrainerBusy, TrainSummary


@dataclass
class Progress:
    """What was trained since the last durable checkpoint.

    Attributes:
        next_offsets: One past the last offset trained (or dead-lettered), per partition.
        records_total: Records the model has trained, over all runs (the next mini-batch row's ``seq``).
        durable_offsets: The newest checkpoint's offsets (the run's start at first).
        history: Mini-batch rows not yet in the database.
        drift_events: Drift event rows not yet in the database.
        coverage: What the model has seen, carried in every checkpoint's meta (``coverage``) for the version made
            from it: ``event_time_min``/``event_time_max`` over all runs, ``held_out_this_run`` (rows this run put
            in the window, never trained), the newest ``window_accuracy``/``prequential_accuracy``, and ``register``
            (whether the run that wrote the checkpoint makes versions).
    """

    next_offsets: dict[int, int]
    records_total: int
    durable_offsets: dict[int, int] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    drift_events: list[dict[str, Any]] = field(default_factory=list)
    coverage: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def resumed(cls, start: dict[int, int], meta: dict[str, Any], *, register: bool,
                history: Any = None) -> "Progress":
        """At a run's start: the checkpoint's offsets and counters, its coverage carried on (this run's counts at 0).

        A checkpoint written before checkpoints carried a coverage takes its event-time range from ``history``'s
        recorded mini-batches (:meth:`include.training.history_rows.RunHistory.event_time_range`).
        """
        previous = meta.get("coverage") or {}
        if not previous and meta.get("checkpoint_id") and history is not None:
            previous = dict(zip(("event_time_min", "event_time_max"), history.event_time_range()))
        coverage = {"event_time_min": previous.get("event_time_min"), "event_time_max": previous.get("event_time_max"),
                    "held_out_this_run": 0, "window_accuracy": previous.get("window_accuracy"),
                    "prequential_accuracy": previous.get("prequential_accuracy"), "register": register}
        return cls(next_offsets=dict(start), records_total=int(meta.get("records_total", 0)),
                   durable_offsets=dict(start), coverage=coverage)

    def add_batch(self, row: dict[str, Any]) -> None:
        """A trained mini-batch's history row: pending, and counted in the coverage."""
        self.history.append(row)
        cov = self.coverage
        for key, pick in (("event_time_min", min), ("event_time_max", max)):
            if row.get(key) is not None:
                cov[key] = row[key] if cov.get(key) is None else pick(cov[key], row[key])
        cov["held_out_this_run"] = int(cov.get("held_out_this_run") or 0) + int(row["n_eval"])
        cov["window_accuracy"], cov["prequential_accuracy"] = row["window_accuracy"], row["prequential_accuracy"]

    def is_dirty(self) -> bool:
        """Whether anything moved since the last durable checkpoint (rows to write or offsets to commit)."""
        return bool(self.history) or self.next_offsets != self.durable_offsets

    def mark_durable(self) -> None:
        """Everything so far is in a checkpoint, the database and the group."""
        self.history = []
        self.drift_events = []
        self.durable_offsets = dict(self.next_offsets)


class Durability:
    """Saves a run's progress in the order of the module docstring.

    Args:
        store: The model's checkpoint store.
        history: The run's history writer.
        reader: The bounded reader whose consumer commits the group's offsets.
        dead_letters: The run's dead letters.
        model: The Keras model being trained.
        learner: Its :class:`include.training.learner.IncrementalLearner` (its state goes in the checkpoint).
        drift: The :class:`include.training.drift.DriftMonitor` (its state goes in the checkpoint).
        topic_id: The topic's id at start (a recreated topic is refused on resume).
        expected_seq: The seq of the checkpoint the run started from (None: there was none).
    """

    def __init__(self, store: CheckpointStore, history: RunHistory, reader: BoundedReader, dead_letters: DeadLetters,
                 *, model: Any, learner: Any, drift: Any, topic_id: str | None, expected_seq: int | None) -> None:
        self.store, self.history, self.reader, self.dead_letters = store, history, reader, dead_letters
        self.model, self.learner, self.drift = model, learner, drift
        self.topic_id = topic_id
        self.expected_seq = expected_seq
        self.saved: dict[str, Any] | None = None  # the meta of the newest checkpoint this run saved

    def save(self, progress: Progress, summary: TrainSummary) -> None:
        """Dead letters -> checkpoint -> history -> group offsets; ``summary`` then names the new checkpoint.

        Raises:
            TrainerBusy: Another trainer advanced the checkpoint under this run.
            RuntimeError: A dead letter was not delivered.
        """
        self.dead_letters.flush()
        self._check_seq()
        meta = self._meta(progress)
        info = self.store.save(self.model, self.learner.get_state(), meta)
        faults.reached("train_after_checkpoint")
        summary.offsets_to = jsonable_offsets(progress.next_offsets)
        summary.checkpoint_id = info.checkpoint_id
        identity = self.history.identity
        saved = {**meta, "checkpoint_id": info.checkpoint_id, "seq": info.seq, "path": str(info.path)}
        self.saved = saved
        self.history.write(progress.history, checkpoint=checkpoint_row(identity, saved),
                           run=run_row(identity, summary, ended=summary.status != "running"),
                           drift_events=progress.drift_events)
        faults.reached("train_after_history")
        self.reader.commit(progress.next_offsets)
        faults.reached("train_after_commit")
        progress.mark_durable()
        self.expected_seq = info.seq

    def _check_seq(self) -> None:
        """The compare-and-set: the newest checkpoint must still be the last one this run saw."""
        latest = self.store.latest_info()
        latest_seq = latest.seq if latest is not None else None
        if latest_seq != self.expected_seq:
            raise TrainerBusy(f"checkpoint moved from seq {self.expected_seq} to {latest_seq} under this run: another "
                              "trainer made progress; this run's work is discarded")

    def _meta(self, progress: Progress) -> dict[str, Any]:
        """The checkpoint's facts: what resuming needs besides the model and the learner's state."""
        identity = self.history.identity
        return {
            "model_name": identity.model_name, "run_id": identity.run_id, "schema_id": identity.schema_id,
            "topic": identity.topic, "topic_id": self.topic_id,
            "offsets": jsonable_offsets(progress.next_offsets), "records_total": progress.records_total,
            "history": progress.history, "drift": self.drift.to_dict(), "drift_events": progress.drift_events,
            "coverage": dict(progress.coverage),
            "created_at": db.utcnow().isoformat(),
        }
