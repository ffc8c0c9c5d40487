"""The bounded training task: resume from the checkpoint and its offsets, train, record, commit.

One run, in order:

1. Take the trainer lock (a second concurrent trainer fails fast and changes nothing).
2. Load the newest valid checkpoint: model + optimizer, learner state (evaluation window, replay buffer),
   the next offset of every partition, counters. Finish what a crashed predecessor left: write the history
   rows the checkpoint carries and commit its offsets to the consumer group (both idempotent).
3. Read mini-batches from those offsets up to the end offsets seen at start (or a timeout / record / time
   limit), decode them a chunk at a time, dead-letter poison messages, train with the compiled learner.
4. Make progress durable in this order: dead letters flushed, checkpoint bundle (atomic; it carries the
   mini-batches' history rows and drift events), history rows, drift events and checkpoint record
   upserted, offsets committed to the group. A crash anywhere leaves the previous checkpoint or the new
   one; the next run continues from it, so every offset is trained exactly once and every mini-batch has
   exactly one history row.

Drift detection (:mod:`include.training.drift`) always runs on the prequential error of the mini-batches; its state
travels in the checkpoint, so a resumed run continues the same statistics. ``TrainOptions.drift`` says how
to react to a detection (default ``none``: record it only).

The checkpoint is the source of truth: consumer-group offsets are only a mirror for lag tools and the UI.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from include import faults
from include.history import db
from include.kafka.clients import KafkaClients
from include.kafka.dead_letters import DeadLetters
from include.kafka.reader import BoundedReader, Message
from include.kafka.tfio_reader import TfioReader
from include.schema import CsvSchema, load_schema
from include.settings import Settings, get_settings
from include.training.lock import trainer_lock
from include.training.options import TrainerBusy, TrainOptions, TrainSummary
from include.training.prefetch import Prefetch

# The public face of the training task: callers import these names from here.
__all__ = ["Trainer", "TrainerBusy", "TrainOptions", "TrainSummary", "train"]

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0
# Also checkpoint once this many mini-batches' history rows are pending: they are held in memory and in the
# checkpoint until it is durable, so a time-only cadence would make memory grow with throughput.
CHECKPOINT_EVERY_BATCHES = 2_000


def _jsonable_offsets(offsets: Mapping[int, int]) -> dict[str, int]:
    return {str(p): int(o) for p, o in sorted(offsets.items())}


def _int_offsets(offsets: Mapping[str, int] | None) -> dict[int, int]:
    return {int(p): int(o) for p, o in (offsets or {}).items()}


def _finite(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@dataclass
class _Progress:
    """What was trained since the last durable checkpoint."""

    next_offsets: dict[int, int]
    records_total: int
    durable_offsets: dict[int, int] = field(default_factory=dict)  # the newest checkpoint's (the run's start at first)
    history: list[dict[str, Any]] = field(default_factory=list)
    drift_events: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """One bounded run. Use :func:`train`."""

    def __init__(self, settings: Settings, options: TrainOptions, *, use_airflow: bool, dag_id: str | None,
                 dag_run_id: str | None, kind: str = "incremental") -> None:
        self.settings, self.options, self.kind = settings, options, kind
        self.use_airflow, self.dag_id, self.dag_run_id = use_airflow, dag_id, dag_run_id
        self.run_id = uuid.uuid4().hex
        self.schema: CsvSchema = load_schema(settings.schema_name)
        self.directory = Path(settings.checkpoint_dir) / options.model_name
        self.sessions = db.session_factory(settings.db_url)
        self.drift = None  # the DriftMonitor, made with the learner

    # -- history ------------------------------------------------------------------------------------------
    def _write_history(self, rows: list[dict[str, Any]], checkpoint: dict[str, Any] | None, run: dict[str, Any] | None,
                       drift_events: list[dict[str, Any]] = ()) -> None:
        with self.sessions.begin() as session:
            if run is not None:
                db.upsert(session, db.TrainingRun, [run], keys=("run_id",))
            for i in range(0, len(rows), 500):
                db.upsert(session, db.BatchMetric, rows[i:i + 500], keys=("model_name", "batch_key"))
            db.upsert(session, db.DriftEvent, drift_events, keys=("model_name", "batch_key"))
            if checkpoint is not None:
                db.upsert(session, db.CheckpointRecord, [checkpoint], keys=("checkpoint_id",))

    def _close_stale_runs(self) -> None:
        """Runs of this model still 'running' belong to crashed trainers (we hold the lock): mark them."""
        from sqlalchemy import update

        with self.sessions.begin() as session:
            session.execute(
                update(db.TrainingRun)
                .where(db.TrainingRun.model_name == self.options.model_name, db.TrainingRun.status == "running")
                .values(status="failed", message="the trainer process died; a later run resumed from its checkpoint")
            )

    # -- the run ------------------------------------------------------------------------------------------
    def run(self) -> TrainSummary:
        from include.training.checkpoint import CheckpointStore

        started_wall = time.perf_counter()
        settings, options = self.settings, self.options
        with trainer_lock(self.directory):
            self._close_stale_runs()
            store = CheckpointStore(self.directory, keep=options.keep_checkpoints, fault_hook=faults.reached)
            loaded = store.load_latest()
            clients = KafkaClients(settings, use_airflow=self.use_airflow)
            log.info("Kafka client configuration: %s", clients.describe())
            meta = loaded.meta if loaded is not None else {}
            if loaded is not None:
                self._finish_predecessor(loaded, clients)
            reader = BoundedReader(
                clients, settings.topic, settings.consumer_group,
                start_offsets=_int_offsets(meta.get("offsets")) if loaded is not None else None,
                stream_timeout_s=settings.stream_timeout_s, max_records=options.max_records,
                max_seconds=options.max_seconds, expected_topic_id=meta.get("topic_id"),
            )
            try:
                if loaded is None and not clients.topic_exists(settings.topic):
                    log.info("topic %s does not exist yet and there is no checkpoint: nothing to train", settings.topic)
                    return TrainSummary(run_id=self.run_id, status="success", stop_reason="nothing_new")
                plan = reader.open()
                self._log_plan(plan, loaded)
                summary = TrainSummary(
                    run_id=self.run_id, status="running", stop_reason=None,
                    offsets_from=_jsonable_offsets(plan.start), offsets_to=_jsonable_offsets(plan.start),
                    end_offsets_at_start=_jsonable_offsets(plan.end),
                    checkpoint_from=meta.get("checkpoint_id"),
                )
                if plan.available == 0:
                    summary.status, summary.stop_reason = "success", "nothing_new"
                    summary.checkpoint_id = summary.checkpoint_from
                    log.info("nothing new in %s since offsets %s: nothing to do", settings.topic, plan.start)
                    self._write_history([], None, self._run_row(summary, ended=True))
                else:
                    self._write_history([], None, self._run_row(summary, ended=False))
                    try:
                        self._train(reader, plan, store, loaded, summary, clients)
                    except BaseException as exc:
                        summary.status = "failed"
                        self._write_history([], None, {**self._run_row(summary, ended=True), "message": str(exc)[:2000]})
                        raise
            finally:
                reader.close()
        summary.seconds = time.perf_counter() - started_wall
        summary.records_per_s = summary.records / summary.seconds if summary.seconds else 0.0
        return summary

    def _log_plan(self, plan, loaded) -> None:
        log.info("reading %s from %s to end offsets %s (%d records available)", plan.topic, plan.start, plan.end, plan.available)

    def _finish_predecessor(self, loaded, clients: KafkaClients) -> None:
        """Write the history rows and commit the offsets the newest checkpoint carries (idempotent)."""
        meta = loaded.meta
        self._write_history(meta.get("history", []), self._checkpoint_row(meta), None, meta.get("drift_events", []))
        from confluent_kafka import TopicPartition

        consumer = clients.consumer(self.settings.consumer_group, role="offsets")
        try:
            offsets = _int_offsets(meta.get("offsets"))
            committed = {tp.partition: tp.offset for tp in consumer.committed(
                [TopicPartition(self.settings.topic, p) for p in sorted(offsets)], timeout=30)}
            disagree = {p: (committed.get(p), o) for p, o in offsets.items() if committed.get(p) != o}
            if disagree:
                log.warning("consumer group %s offsets disagree with checkpoint %s as {partition: (committed, checkpoint)}: "
                            "%s; following the checkpoint and committing its offsets", self.settings.consumer_group,
                            meta.get("checkpoint_id"), disagree)
            if offsets:
                consumer.commit(offsets=[TopicPartition(self.settings.topic, p, o) for p, o in sorted(offsets.items())],
                                asynchronous=False)
        finally:
            consumer.close()

    def _checkpoint_row(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "checkpoint_id": meta["checkpoint_id"], "model_name": self.options.model_name, "run_id": meta.get("run_id"),
            "seq": int(meta["seq"]), "path": str(meta.get("path", "")), "offsets": meta.get("offsets", {}),
            "records_total": int(meta.get("records_total", 0)), "schema_id": meta.get("schema_id", self.schema.id),
        }

    def _run_row(self, summary: TrainSummary, *, ended: bool) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "kind": self.kind, "model_name": self.options.model_name, "dag_id": self.dag_id,
            "dag_run_id": self.dag_run_id, "topic": self.settings.topic, "consumer_group": self.settings.consumer_group,
            "reader": self.options.reader, "mode": self.options.mode, "status": summary.status,
            "stop_reason": summary.stop_reason, "offsets_from": summary.offsets_from, "offsets_to": summary.offsets_to,
            "end_offsets_at_start": summary.end_offsets_at_start, "records": summary.records, "poison": summary.poison,
            "batches": summary.batches, "checkpoint_from": summary.checkpoint_from, "checkpoint_id": summary.checkpoint_id,
            "window_accuracy": summary.window_accuracy, "prequential_accuracy": summary.prequential_accuracy,
            "ended_at": db.utcnow() if ended else None,
        }

    def _model_and_learner(self, loaded):
        from include.training.learner import IncrementalLearner
        from include.training.learner_config import LearnerConfig
        from include.training.model import build_model

        options = self.options
        config = dict(batch_messages=self.settings.batch_messages, mode=options.mode, chunk_batches=options.chunk_batches,
                      seed=options.seed, learning_rate=options.learning_rate)
        if options.replay_buffer is not None:
            config["replay_buffer"] = options.replay_buffer
        if options.replay_steps is not None:
            config["replay_steps"] = options.replay_steps
        if loaded is not None:
            if loaded.meta.get("schema_id") != self.schema.id:
                raise RuntimeError(f"checkpoint {loaded.meta.get('checkpoint_id')} is for schema {loaded.meta.get('schema_id')}, "
                                   f"not {self.schema.id}; use another model name to train a new model")
            model = loaded.model
            from include.training.decode import raw_width

            if int(model.inputs[0].shape[-1]) != raw_width(self.schema):
                raise RuntimeError(f"checkpoint {loaded.meta.get('checkpoint_id')}'s model takes {model.inputs[0].shape[-1]} raw "
                                   f"features but schema {self.schema.id} now declares {raw_width(self.schema)}: the "
                                   "features changed. Train a new model (another model name).")
            saved = LearnerConfig.from_dict(loaded.learner_state.get("config", {}))
            if saved.mode != options.mode or saved.batch_messages != self.settings.batch_messages:
                raise RuntimeError(f"checkpoint was trained with mode={saved.mode} batch={saved.batch_messages}; this run asks "
                                   f"mode={options.mode} batch={self.settings.batch_messages}. Use another model name.")
            learner = IncrementalLearner(model, LearnerConfig(**{**saved.as_dict(), "chunk_batches": options.chunk_batches}))
            learner.set_state(loaded.learner_state)
        else:
            model = build_model(self.schema, seed=options.seed)
            learner = IncrementalLearner(model, LearnerConfig(**config))
        return model, learner

    def _train(self, reader: BoundedReader, plan, store, loaded, summary: TrainSummary, clients: KafkaClients) -> None:
        from include.training.drift import DriftConfig, DriftMonitor
        from include.training.decode import decode_batch
        from include.training.model import configure_tensorflow

        if self.options.reader == "tfio" and (self.options.max_records or self.options.max_seconds):
            raise ValueError("the tfio reader cannot stop at a record or time limit (it cannot see offsets); "
                             "use the confluent reader")
        configure_tensorflow()
        model, learner = self._model_and_learner(loaded)
        meta = loaded.meta if loaded is not None else {}
        self.drift = DriftMonitor(DriftConfig(reaction=self.options.drift, detector=self.options.drift_detector),
                                  meta.get("drift"))
        self.drift.attach(learner)
        progress = _Progress(next_offsets=dict(plan.start), records_total=int(meta.get("records_total", 0)),
                             durable_offsets=dict(plan.start))
        expected_seq = int(meta["seq"]) if loaded is not None else None
        dead = DeadLetters(clients, self.settings.dlq_topic, self.settings.topic)
        per_call = self.settings.batch_messages * self.options.chunk_batches
        last_log = last_ckpt = time.monotonic()
        t0 = time.perf_counter()
        pending: list[list[Message]] = []
        last_metrics = None

        def train_pending() -> None:
            nonlocal last_metrics
            if not pending:
                return
            messages = [m for batch in pending for m in batch]
            decoded = decode_batch(self.schema, [m.value for m in messages])
            for index, reason in decoded.errors:
                dead.send(messages[index], reason)
            good = np.zeros(len(messages), dtype=bool)
            good[decoded.good] = True
            sizes, bounds, start = [], [], 0
            for batch in pending:
                end = start + len(batch)
                sizes.append(int(good[start:end].sum()))
                bounds.append((start, end))
                start = end
            metrics, detections = self.drift.process(learner, decoded.x, decoded.y, sizes)
            faults.reached("train_after_step")
            first_row = len(progress.history)
            for batch, (b0, b1), m in zip(pending, bounds, metrics):
                progress.history.append(self._history_row(batch, m, progress.records_total, summary.batches))
                for msg in batch:
                    if msg.offset + 1 > progress.next_offsets.get(msg.partition, -1):
                        progress.next_offsets[msg.partition] = msg.offset + 1
                progress.records_total += len(batch)
                summary.batches += 1
                summary.records += len(batch)
                summary.trained_rows += m.n
                last_metrics = m
            for det in detections:
                event = self._drift_row(progress.history[first_row + det.index], det)
                progress.drift_events.append(event)
                summary.drift_events += 1
                log.warning("drift detected by %s at records %d-%d (%d rows after the estimated change): prequential "
                            "accuracy %s -> %s; reaction %s", det.detector, event["seq"],
                            event["seq"] + progress.history[first_row + det.index]["n"], det.rows_since_change,
                            _fmt(det.accuracy_before), _fmt(det.accuracy_after), det.reaction)
            summary.poison = dead.count
            pending.clear()

        source: BoundedReader | TfioReader
        if self.options.reader == "tfio":
            source = TfioReader(clients, self.settings.topic, self.settings.consumer_group, plan.start,
                                batch_messages=self.settings.batch_messages,
                                stream_timeout_s=self.settings.stream_timeout_s, commit=reader.commit)
            batches = source.batches()
        else:
            source = reader
            # Read ahead in a thread, so reading overlaps decoding, training and history writes.
            batches = Prefetch(reader.batches(self.settings.batch_messages), max_items=4 * self.options.chunk_batches)
        try:
            for batch in batches:
                pending.append(batch)
                if sum(len(b) for b in pending) >= per_call:
                    train_pending()
                    now = time.monotonic()
                    if now - last_log >= PROGRESS_EVERY_S:
                        last_log = now
                        rate = summary.records / (time.perf_counter() - t0)
                        log.info("progress: %d records (%.0f records/s), window accuracy %.4f, prequential %.4f, offsets %s",
                                 summary.records, rate, last_metrics.window_accuracy, last_metrics.prequential_accuracy,
                                 progress.next_offsets)
                    if (now - last_ckpt >= self.options.checkpoint_every_s
                            or len(progress.history) >= CHECKPOINT_EVERY_BATCHES):
                        last_ckpt = now
                        expected_seq = self._make_durable(store, model, learner, progress, summary, reader, dead, expected_seq)
        finally:
            batches.close()  # before the reader's consumer is closed
        train_pending()
        progress.next_offsets = source.next_offsets_after(progress.next_offsets)
        summary.stop_reason = source.stop_reason
        if summary.records == 0 and summary.stop_reason == "end_offsets":
            summary.stop_reason = "nothing_new"  # only transaction markers lay between the checkpoint and the end
        if last_metrics is not None:
            summary.window_accuracy = _finite(last_metrics.window_accuracy)
            summary.prequential_accuracy = _finite(last_metrics.prequential_accuracy)
        summary.status = "success"
        if progress.history or progress.next_offsets != progress.durable_offsets:
            self._make_durable(store, model, learner, progress, summary, reader, dead, expected_seq)
        else:  # nothing since the last checkpoint (this run's, or the one it started from): do not repeat it
            summary.checkpoint_id = summary.checkpoint_id or summary.checkpoint_from
            self._write_history([], None, self._run_row(summary, ended=True))
        elapsed = time.perf_counter() - t0
        log.info("done: %d records in %.1fs (%.0f records/s), %d mini-batches, %d poison, stop reason %s, window accuracy %s, "
                 "checkpoint %s", summary.records, elapsed, summary.records / elapsed if elapsed else 0, summary.batches,
                 summary.poison, summary.stop_reason, summary.window_accuracy, summary.checkpoint_id)

    def _history_row(self, batch: list[Message], m, seq: int, index: int) -> dict[str, Any]:
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        times = [msg.timestamp_ms for msg in batch if msg.timestamp_ms is not None]
        for msg in batch:
            if msg.offset >= 0:
                first.setdefault(msg.partition, msg.offset)
                last[msg.partition] = msg.offset
        # The tfio reader cannot see offsets: its rows are keyed by run and index (see include.kafka.tfio_reader).
        key = ",".join(f"p{p}:{o}" for p, o in sorted(first.items())) or f"tfio:{self.run_id}:{index}"
        return {
            "model_name": self.options.model_name,
            "batch_key": key,
            "run_id": self.run_id, "kind": self.kind, "seq": seq, "batch_index": index,
            "offsets_from": _jsonable_offsets(first), "offsets_to": _jsonable_offsets({p: o + 1 for p, o in last.items()}),
            "n": len(batch), "n_train": int(m.n_train), "n_eval": int(m.n_eval), "loss": _finite(m.loss),
            "train_accuracy": _finite(m.train_accuracy), "window_accuracy": _finite(m.window_accuracy),
            "prequential_accuracy": _finite(m.prequential_accuracy),
            "event_time_min": min(times) if times else None, "event_time_max": max(times) if times else None,
        }

    def _drift_row(self, row: dict[str, Any], det) -> dict[str, Any]:
        """A drift event, keyed like the mini-batch whose metrics fired it."""
        return {
            "model_name": row["model_name"], "batch_key": row["batch_key"], "run_id": self.run_id, "seq": row["seq"],
            "offsets": row["offsets_from"], "event_time": row["event_time_max"], "detector": det.detector,
            "accuracy_before": _finite(det.accuracy_before), "accuracy_after": _finite(det.accuracy_after),
            "reaction": det.reaction,
        }

    def _make_durable(self, store, model, learner, progress: _Progress, summary: TrainSummary, reader: BoundedReader,
                      dead: DeadLetters, expected_seq: int | None) -> int:
        """Dead letters -> checkpoint -> history -> group offsets. Returns the new checkpoint's seq."""
        dead.flush()
        latest = store.latest_info()
        latest_seq = latest.seq if latest is not None else None
        if latest_seq != expected_seq:
            raise TrainerBusy(f"checkpoint moved from seq {expected_seq} to {latest_seq} under this run: another trainer "
                              "made progress; this run's work is discarded")
        meta = {
            "model_name": self.options.model_name, "run_id": self.run_id, "schema_id": self.schema.id,
            "topic": self.settings.topic, "topic_id": reader.plan.topic_id if reader.plan else None,
            "offsets": _jsonable_offsets(progress.next_offsets), "records_total": progress.records_total,
            "history": progress.history, "drift": self.drift.to_dict(), "drift_events": progress.drift_events,
            "created_at": db.utcnow().isoformat(),
        }
        info = store.save(model, learner.get_state(), meta)
        faults.reached("train_after_checkpoint")
        summary.offsets_to = _jsonable_offsets(progress.next_offsets)
        summary.checkpoint_id = info.checkpoint_id
        ckpt_meta = {**meta, "checkpoint_id": info.checkpoint_id, "seq": info.seq, "path": str(info.path)}
        self._write_history(progress.history, self._checkpoint_row(ckpt_meta), self._run_row(summary, ended=summary.status != "running"),
                            progress.drift_events)
        faults.reached("train_after_history")
        reader.commit(progress.next_offsets)
        faults.reached("train_after_commit")
        progress.history = []
        progress.drift_events = []
        progress.durable_offsets = dict(progress.next_offsets)
        return info.seq


def train(settings: Settings | None = None, options: TrainOptions | None = None, *, use_airflow: bool = False,
          dag_id: str | None = None, dag_run_id: str | None = None) -> TrainSummary:
    """Run one bounded training task; see the module docstring."""
    return Trainer(settings or get_settings(), options or TrainOptions(), use_airflow=use_airflow, dag_id=dag_id,
                   dag_run_id=dag_run_id).run()
