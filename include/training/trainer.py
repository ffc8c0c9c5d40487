"""The bounded training task: resume from the checkpoint and its offsets, train, record, commit.

One run, in order (:meth:`Trainer.run` reads the same way):

1. Take the trainer lock (:mod:`include.training.lock`): a second concurrent trainer fails fast and changes
   nothing. Runs of this model still marked running belong to crashed trainers and are marked failed.
2. Load the newest valid checkpoint (:mod:`include.training.checkpoint`): learner state (evaluation window, replay
   buffer), the next offset of every partition, counters; its model + optimizer (TensorFlow) only once there is
   something to train, so a run with nothing new never imports TensorFlow. Finish what a crashed predecessor left
   (:mod:`include.training.resume`): write the history rows the checkpoint carries and commit its offsets to the
   consumer group (both idempotent).
3. Read from those offsets up to the end offsets seen at start (or a timeout / record / time limit), with
   :class:`include.kafka.reader.BoundedReader` (whole fetches as columns, several partitions merged by event time
   into one order, fetched by the client while TensorFlow is imported, then read and decoded ahead in a thread:
   :mod:`include.training.prefetch`) or with tensorflow-io
   (:mod:`include.kafka.tfio_reader`); cut mini-batches and chunks, dead-letter poison messages, train with the
   compiled learner (:mod:`include.training.loop`). The summary's ``timings`` say where the time went.
4. Make progress durable (:mod:`include.training.durability`) in this order: dead letters flushed, checkpoint
   bundle (atomic; it carries the mini-batches' history rows and drift events), history rows, drift events and
   checkpoint record upserted, offsets committed to the group. A crash anywhere leaves the previous checkpoint or
   the new one; the next run continues from it, so every offset is trained exactly once and every mini-batch has
   exactly one history row.
5. Register a model version (:mod:`include.training.versioning`) from the newest checkpoint the run saved, unless
   ``TrainOptions.register`` is off. A run killed before that is caught up by the next run, right after step 2.

Drift detection (:mod:`include.training.drift`) always runs on the prequential error of the mini-batches; its state
travels in the checkpoint, so a resumed run continues the same statistics. ``TrainOptions.drift`` says how to react
to a detection (default ``none``: record it only).

The checkpoint is the source of truth: consumer-group offsets are only a mirror for lag tools and the UI. This
module owns the order of the steps and nothing else: it never builds a history row, never commits an offset and
never touches the learner's state itself.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from include import faults
from include.history import db
from include.kafka.clients import KafkaClients
from include.kafka.dead_letters import DeadLetters
from include.kafka.reader import STOP_END_OFFSETS, STOP_NOTHING_NEW, BoundedReader, ReadPlan
from include.kafka.records import Records
from include.kafka.tfio_reader import TfioReader
from include.schema import load_schema
from include.settings import Settings, get_settings
from include.training.checkpoint import CheckpointStore, LoadedCheckpoint
from include.training.chunks import Fetched, decoder
from include.training.durability import Durability, Progress
from include.training.history_rows import RunHistory, RunIdentity, finite, int_offsets, jsonable_offsets
from include.training.lock import trainer_lock
from include.training.loop import ReadTrainLoop
from include.training.options import StageTimes, TrainerBusy, TrainOptions, TrainSummary
from include.training.prefetch import Prefetch
from include.training.resume import build_model_and_learner, finish_predecessor, resolve_mode, resume_drift_monitor
from include.training.versioning import catch_up, register_checkpoint

# The public face of the training task: callers import these names from here.
__all__ = ["Trainer", "TrainerBusy", "TrainOptions", "TrainSummary", "train"]

log = logging.getLogger(__name__)

# Messages the reader thread may read ahead of training (about 100 bytes each in memory): enough to keep reading
# while TensorFlow is imported and the learner compiled.
READ_AHEAD_MESSAGES = 256_000


def train(settings: Settings | None = None, options: TrainOptions | None = None, *, use_airflow: bool = False,
          dag_id: str | None = None, dag_run_id: str | None = None) -> TrainSummary:
    """Run one bounded training task; see the module docstring.

    Args:
        settings: Project settings; from the environment by default.
        options: What the run does; the defaults by default.
        use_airflow: Read the Kafka configuration from the Airflow Connection (inside tasks).
        dag_id: Recorded with the run.
        dag_run_id: Recorded with the run.

    Raises:
        TrainerBusy: Another trainer holds the lock or advanced the checkpoint; this run changed nothing.
        OffsetError: The checkpoint's offsets no longer fit the topic (retention, recreated topic).
    """
    return Trainer(settings or get_settings(), options or TrainOptions(), use_airflow=use_airflow, dag_id=dag_id,
                   dag_run_id=dag_run_id).run()


class Trainer:
    """One bounded run. Use :func:`train`."""

    def __init__(self, settings: Settings, options: TrainOptions, *, use_airflow: bool, dag_id: str | None,
                 dag_run_id: str | None, kind: str = "incremental") -> None:
        self.settings, self.options, self.use_airflow = settings, options, use_airflow
        self.run_id = uuid.uuid4().hex
        self.schema = load_schema(settings.schema_name)
        self.directory = Path(settings.checkpoint_dir) / options.model_name
        self.identity = RunIdentity(
            run_id=self.run_id, kind=kind, model_name=options.model_name, schema_id=self.schema.id,
            topic=settings.topic, consumer_group=settings.consumer_group, reader=options.reader,
            mode=options.mode or "(from the checkpoint)",
            dag_id=dag_id, dag_run_id=dag_run_id,
        )
        self.history = RunHistory(db.session_factory(settings.db_url), self.identity)
        self._trained: tuple[Any, Any, Durability] | None = None  # model, learner, durability once training began
        self.timings = StageTimes()

    def run(self) -> TrainSummary:
        """Steps 1 to 4 of the module docstring; the run's summary."""
        started = time.perf_counter()
        with trainer_lock(self.directory):
            self.history.close_stale_runs()
            store = CheckpointStore(self.directory, keep=self.options.keep_checkpoints, fault_hook=faults.reached)
            # The model (Keras, TensorFlow) is loaded once there is something to train: a run that finds nothing
            # new never imports TensorFlow.
            loaded = store.load_latest(model=False)
            self._settle_mode(loaded)
            clients = KafkaClients(self.settings, use_airflow=self.use_airflow)
            log.info("Kafka client configuration: %s", clients.describe())
            if loaded is not None:
                finish_predecessor(loaded, clients, self.settings, self.history)
                if self.options.register:
                    catch_up(self.settings, self.options.model_name, loaded, self._restore)
            reader = self._bounded_reader(clients, loaded)
            try:
                if loaded is None and not clients.topic_exists(self.settings.topic):
                    log.info("topic %s does not exist yet and there is no checkpoint: nothing to train", self.settings.topic)
                    return TrainSummary(run_id=self.run_id, status="success", stop_reason=STOP_NOTHING_NEW)
                summary = self._plan_and_train(reader, store, loaded, clients, started)
            finally:
                reader.close()
            with self.timings.measure("register"):
                self._register(summary)
        summary.seconds = time.perf_counter() - started
        summary.records_per_s = summary.records / summary.seconds if summary.seconds else 0.0
        summary.timings = self.timings.as_dict()
        return summary

    def _settle_mode(self, loaded: LoadedCheckpoint | None) -> None:
        """The learner mode of this run (asked for, else the model's own, else the default), recorded with it."""
        self.options.mode = resolve_mode(self.options.mode, loaded)
        self.identity = dataclasses.replace(self.identity, mode=self.options.mode)
        self.history.identity = self.identity

    def _restore(self, loaded: LoadedCheckpoint) -> tuple[Any, Any]:
        """The model and learner of a checkpoint (for registering it when a killed run could not)."""
        from include.training.model import configure_tensorflow

        configure_tensorflow()
        return build_model_and_learner(self.schema, self.settings, self.options, loaded)

    def _register(self, summary: TrainSummary) -> None:
        """Step 5: the newest checkpoint this run saved becomes a model version (see include.training.versioning)."""
        if not self.options.register or self._trained is None or self._trained[2].saved is None:
            return
        model, learner, durability = self._trained
        faults.reached("version_before_register")
        summary.version = register_checkpoint(self.settings, self.options.model_name, model, learner,
                                              durability.saved).version

    def _bounded_reader(self, clients: KafkaClients, loaded: LoadedCheckpoint | None) -> BoundedReader:
        """The reader at the checkpoint's offsets (none: the group's, else the earliest), on this run's limits."""
        meta = loaded.meta if loaded is not None else {}
        return BoundedReader(
            clients, self.settings.topic, self.settings.consumer_group,
            start_offsets=int_offsets(meta.get("offsets")) if loaded is not None else None,
            stream_timeout_s=self.settings.stream_timeout_s, max_records=self.options.max_records,
            max_seconds=self.options.max_seconds, expected_topic_id=meta.get("topic_id"),
            stop_offsets=self.options.stop_offsets,
        )

    def _plan_and_train(self, reader: BoundedReader, store: CheckpointStore, loaded: LoadedCheckpoint | None,
                        clients: KafkaClients, started: float) -> TrainSummary:
        """Open the reader, record the run, and train if there is anything new (a failure is recorded, then raised)."""
        plan = reader.open()
        self.timings.add("set-up", time.perf_counter() - started)
        log.info("reading %s from %s to end offsets %s (%d records available)", plan.topic, plan.start, plan.end,
                 plan.available)
        summary = TrainSummary(
            run_id=self.run_id, status="running", stop_reason=None,
            offsets_from=jsonable_offsets(plan.start), offsets_to=jsonable_offsets(plan.start),
            end_offsets_at_start=jsonable_offsets(plan.end),
            checkpoint_from=loaded.meta.get("checkpoint_id") if loaded is not None else None,
        )
        if plan.available == 0:
            summary.status, summary.stop_reason = "success", STOP_NOTHING_NEW
            summary.checkpoint_id = summary.checkpoint_from
            log.info("nothing new in %s since offsets %s: nothing to do", self.settings.topic, plan.start)
            self.history.record_run(summary, ended=True)
            return summary
        self.history.record_run(summary, ended=False)
        try:
            self._train(reader, plan, store, loaded, summary, clients)
        except BaseException as exc:
            summary.status = "failed"
            self.history.record_run(summary, ended=True, message=str(exc)[:2000])
            raise
        return summary

    def _train(self, reader: BoundedReader, plan: ReadPlan, store: CheckpointStore, loaded: LoadedCheckpoint | None,
               summary: TrainSummary, clients: KafkaClients) -> None:
        """Steps 3 and 4: resume the learner, train on everything new, make it durable."""
        self._check_reader_limits()
        meta = loaded.meta if loaded is not None else {}
        progress = Progress.resumed(plan.start, meta, register=self.options.register, history=self.history)
        dead_letters = DeadLetters(clients, self.settings.dlq_topic, self.settings.topic)
        # The client fetches in its own threads while TensorFlow is imported and the learner compiled; the reader
        # thread (Python: it would slow the import, which holds the interpreter) starts after, beside training.
        if self.options.reader != "tfio":
            reader.start()
        model, learner = self._learner(loaded)
        source, fetches = self._open_fetches(clients, plan, reader)
        try:
            drift = resume_drift_monitor(self.options, meta, learner)
            durability = Durability(store, self.history, reader, dead_letters, model=model, learner=learner,
                                    drift=drift, topic_id=plan.topic_id,
                                    expected_seq=int(meta["seq"]) if loaded is not None else None)
            loop = ReadTrainLoop(schema=self.schema, learner=learner, drift=drift, dead_letters=dead_letters,
                                 durability=durability, progress=progress, summary=summary, identity=self.identity,
                                 chunk_messages=self.settings.batch_messages * self.options.chunk_batches,
                                 checkpoint_every_s=self.options.checkpoint_every_s, timings=self.timings)
            self._trained = (model, learner, durability)
            loop.run(fetches, fetch_is_batch=self.options.reader == "tfio")
        finally:
            fetches.close()  # before the reader's consumer is closed
        if isinstance(fetches, Prefetch):
            self.timings.add("read (reader thread, overlapping)", fetches.read_seconds)
            self.timings.add("decode (reader thread, overlapping)", fetches.prepare_seconds)
        loop.train_pending()
        progress.next_offsets = source.next_offsets_after(progress.next_offsets)
        self._finish(loop, durability, source.stop_reason)

    def _learner(self, loaded: LoadedCheckpoint | None) -> tuple[Any, Any]:
        """TensorFlow, the model (new or the checkpoint's) and its learner, compiled."""
        with self.timings.measure("TensorFlow and the model"):
            from include.training.model import configure_tensorflow

            configure_tensorflow()
            model, learner = build_model_and_learner(self.schema, self.settings, self.options, loaded)
        with self.timings.measure("compile"):
            learner.compile()
        return model, learner

    def _check_reader_limits(self) -> None:
        if self.options.reader == "tfio" and (self.options.max_records or self.options.max_seconds
                                              or self.options.stop_offsets):
            raise ValueError("the tfio reader cannot stop at a record or time limit (it cannot see offsets); "
                             "use the confluent reader")

    def _open_fetches(self, clients: KafkaClients, plan: ReadPlan,
                      reader: BoundedReader) -> tuple[BoundedReader | TfioReader, Iterator[Records | Fetched]]:
        """The reader that says where the run stopped, and its fetches (closable; close before the reader)."""
        if self.options.reader == "tfio":
            tfio = TfioReader(clients, self.settings.topic, self.settings.consumer_group, plan.start,
                              batch_messages=self.settings.batch_messages,
                              stream_timeout_s=self.settings.stream_timeout_s, commit=reader.commit)
            return tfio, tfio.fetches()
        # Read and decode ahead in a thread, so both overlap start-up, training and history writes.
        fetch = self.settings.batch_messages * self.options.chunk_batches
        return reader, Prefetch(reader.fetches(fetch), max_items=max(4, READ_AHEAD_MESSAGES // fetch),
                                prepare=decoder(self.schema))

    def _finish(self, loop: ReadTrainLoop, durability: Durability, stop_reason: str | None) -> None:
        """Complete the summary and make the rest durable (or only record the run when nothing moved)."""
        summary, progress = loop.summary, loop.progress
        summary.stop_reason = stop_reason
        if summary.records == 0 and summary.stop_reason == STOP_END_OFFSETS:
            summary.stop_reason = STOP_NOTHING_NEW  # only transaction markers lay between the checkpoint and the end
        if loop.last_metrics is not None:
            summary.window_accuracy = finite(loop.last_metrics.window_accuracy)
            summary.prequential_accuracy = finite(loop.last_metrics.prequential_accuracy)
        summary.status = "success"
        if progress.is_dirty():
            with self.timings.measure("durability"):
                durability.save(progress, summary)
        else:  # nothing since the last checkpoint (this run's, or the one it started from): do not repeat it
            summary.checkpoint_id = summary.checkpoint_id or summary.checkpoint_from
            self.history.record_run(summary, ended=True)
        elapsed = loop.seconds()
        log.info("done: %d records in %.1fs (%.0f records/s), %d mini-batches, %d poison, stop reason %s, window accuracy %s, "
                 "checkpoint %s", summary.records, elapsed, summary.records / elapsed if elapsed else 0, summary.batches,
                 summary.poison, summary.stop_reason, summary.window_accuracy, summary.checkpoint_id)
