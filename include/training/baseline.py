"""The batch baseline: a fresh model trained on everything in the topic, several epochs, judged on held-out rows.

It answers "how good could the model be on these rows if it saw them all at once?", the line the incremental
curve is drawn against. One run:

1. Read the topic from its earliest offsets up to the end offsets seen at start (and at most ``max_records``
   records) with :class:`include.kafka.reader.BoundedReader`, decode with :func:`include.training.decode.decode_batch`.
2. Split the rows as the incremental learner does, so both accuracies are measured on the same kind of rows: of
   every ``batch_messages`` consecutive records, the first ``floor(train_fraction * n)`` train and the rest are
   held out.
3. Train a fresh :func:`include.training.model.build_model` for ``epochs`` epochs (shuffled, mini-batches of
   ``batch_size``), then measure the held-out accuracy.
4. Record one ``training_runs`` row with ``kind = "batch_baseline"`` and the held-out accuracy in
   ``window_accuracy``: the Model accuracy page draws the newest one beside the model's incremental curve.

It never commits offsets (the trainer's consumer group is not moved), never dead-letters poison messages (the
incremental trainer does that; here they are counted and skipped), and never touches the incremental model's
checkpoints. Memory: the rows read, i.e. ``max_records`` x the raw width in float32.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np

from include.history import db
from include.kafka.clients import KafkaClients
from include.kafka.reader import BoundedReader, Message, ReadPlan
from include.schema import CsvSchema, load_schema
from include.settings import Settings, get_settings
from include.training.history_rows import jsonable_offsets

log = logging.getLogger(__name__)

KIND = "batch_baseline"
READ_CHUNK = 20_000  # messages decoded per call


def split_rows(n: int, batch_messages: int, train_fraction: float) -> np.ndarray:
    """Boolean mask over ``n`` rows in stream order: True where the incremental learner would train the row.

    Args:
        n: Rows.
        batch_messages: Rows per mini-batch (the last one may be shorter).
        train_fraction: The first ``floor(train_fraction * size)`` rows of each mini-batch train.
    """
    from include.training.learner_config import LearnerConfig, split_sizes

    cfg = LearnerConfig(batch_messages=batch_messages, train_fraction=train_fraction,
                        window_size=max(1000, batch_messages))
    mask = np.zeros(n, dtype=bool)
    row = 0
    for size in split_sizes(n, batch_messages):
        mask[row:row + cfg.train_rows(size)] = True
        row += size
    return mask


def train_baseline(
    settings: Settings | None = None,
    *,
    model_name: str = "default",
    max_records: int | None = 1_000_000,
    epochs: int = 20,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    train_fraction: float = 0.8,
    seed: int = 0,
    use_airflow: bool = False,
    dag_id: str | None = None,
    dag_run_id: str | None = None,
) -> dict[str, Any]:
    """Train and record one batch baseline (see the module docstring).

    Args:
        settings: Project settings (topic, schema, database, mini-batch size); from the environment by default.
        model_name: The incremental model this baseline is drawn beside (its ``training_runs.model_name``).
        max_records: Read at most this many records (None: up to the end offsets seen at start).
        epochs: Passes over the training rows.
        batch_size: Rows per gradient step.
        learning_rate: Adam's learning rate.
        train_fraction: Share of each mini-batch trained (the rest is held out), as the incremental learner.
        seed: Seeds the initial weights and the shuffling.
        use_airflow: Read the Kafka configuration from the Airflow Connection.
        dag_id: Recorded with the run.
        dag_run_id: Recorded with the run.

    Returns:
        A JSON-able summary: run_id, status, records, train/held-out rows, poison, accuracies, seconds, offsets.
    """
    settings = settings or get_settings()
    if epochs < 1 or batch_size < 1 or (max_records is not None and max_records < 1):
        raise ValueError("epochs, batch_size and max_records must be positive")
    started = time.perf_counter()
    schema = load_schema(settings.schema_name)
    group = f"{settings.consumer_group}.baseline"
    record = _BaselineRecord(db.session_factory(settings.db_url), run_id=uuid.uuid4().hex, model_name=model_name,
                             topic=settings.topic, group=group, dag_id=dag_id, dag_run_id=dag_run_id)
    clients = KafkaClients(settings, use_airflow=use_airflow)
    log.info("Kafka client configuration: %s", clients.describe())
    # start_offsets={} means every partition from its earliest offset, whatever any group committed.
    reader = BoundedReader(clients, settings.topic, group, start_offsets={}, stream_timeout_s=settings.stream_timeout_s,
                           max_records=max_records)
    try:
        record.opened(reader.open())
        x, y, poison, next_offsets = _read_rows(reader, schema, settings.batch_messages)
        record.read(len(y), poison, next_offsets, reader.stop_reason, seconds=time.perf_counter() - started)
        if len(y) == 0:
            log.info("nothing to train on in %s: no baseline recorded", settings.topic)
            return record.nothing_new()
        mask = split_rows(len(y), settings.batch_messages, train_fraction)
        fit = _fit(schema, x[mask], y[mask], x[~mask], y[~mask], epochs=epochs, batch_size=batch_size,
                   learning_rate=learning_rate, seed=seed)
        return record.fitted(fit, mask, epochs=epochs, seconds=time.perf_counter() - started)
    except BaseException as exc:
        record.failed(exc)
        raise
    finally:
        reader.close()


class _BaselineRecord:
    """The baseline's ``training_runs`` row and its JSON summary, written as the run goes."""

    def __init__(self, sessions: Any, *, run_id: str, model_name: str, topic: str, group: str, dag_id: str | None,
                 dag_run_id: str | None) -> None:
        self.sessions = sessions
        self.run: dict[str, Any] = {
            "run_id": run_id, "kind": KIND, "model_name": model_name, "dag_id": dag_id, "dag_run_id": dag_run_id,
            "topic": topic, "consumer_group": group, "reader": "confluent", "mode": "batch", "status": "running",
        }
        self.summary: dict[str, Any] = {"run_id": run_id, "kind": KIND, "model_name": model_name, "status": "running"}

    def opened(self, plan: ReadPlan) -> None:
        """Reading starts at ``plan``'s offsets: the run is recorded as running."""
        start = jsonable_offsets(plan.start)
        self.run.update(offsets_from=start, offsets_to=start, end_offsets_at_start=jsonable_offsets(plan.end))
        self._write()

    def read(self, rows: int, poison: int, next_offsets: dict[int, int], stop_reason: str | None, *,
             seconds: float) -> None:
        """What reading found; it is written with the run's next state."""
        self.run.update(offsets_to=jsonable_offsets(next_offsets) or self.run["offsets_from"], records=rows + poison,
                        poison=poison, stop_reason=stop_reason)
        self.summary.update(records=rows + poison, poison=poison, stop_reason=stop_reason, read_seconds=round(seconds, 3),
                            offsets_from=self.run["offsets_from"], offsets_to=self.run["offsets_to"])

    def nothing_new(self) -> dict[str, Any]:
        """No rows to train on: the run succeeds without a baseline. The summary."""
        self.summary.update(status="success", heldout_accuracy=None, train_rows=0, heldout_rows=0)
        self.run.update(status="success", stop_reason="nothing_new", ended_at=db.utcnow())
        self._write()
        return self.summary

    def fitted(self, fit: dict[str, Any], mask: np.ndarray, *, epochs: int, seconds: float) -> dict[str, Any]:
        """The model was fitted and measured: the run succeeds with its held-out accuracy. The summary."""
        train_rows, heldout_rows = int(mask.sum()), int((~mask).sum())
        self.summary.update(status="success", train_rows=train_rows, heldout_rows=heldout_rows, epochs=epochs,
                            seconds=round(seconds, 3), records_per_s=round(self.run["records"] / seconds, 1), **fit)
        self.run.update(status="success", window_accuracy=fit["heldout_accuracy"], batches=epochs, ended_at=db.utcnow())
        self._write()
        log.info("batch baseline %s: %d rows (%d trained, %d held out), %d epochs in %.1fs: held-out accuracy %s, "
                 "training accuracy %.4f", self.run["run_id"], len(mask), train_rows, heldout_rows, epochs, seconds,
                 fit["heldout_accuracy"], fit["train_accuracy"])
        return self.summary

    def failed(self, exc: BaseException) -> None:
        """The run failed with ``exc``."""
        self.run.update(status="failed", message=str(exc)[:2000], ended_at=db.utcnow())
        self._write()

    def _write(self) -> None:
        with self.sessions.begin() as session:
            db.upsert(session, db.TrainingRun, [self.run], keys=("run_id",))


def _read_rows(reader: BoundedReader, schema: CsvSchema,
               batch_messages: int) -> tuple[np.ndarray, np.ndarray, int, dict[int, int]]:
    """Every record up to the reader's bounds, decoded; poison messages are counted and left out."""
    from include.training.decode import raw_width

    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    poison, next_offsets = 0, {}
    pending: list[Message] = []
    for batch in reader.batches(batch_messages):
        pending.extend(batch)
        for msg in batch:
            next_offsets[msg.partition] = max(next_offsets.get(msg.partition, 0), msg.offset + 1)
        if len(pending) >= READ_CHUNK:
            poison += _decode_into(schema, pending, xs, ys)
            pending = []
    if pending:
        poison += _decode_into(schema, pending, xs, ys)
    width = raw_width(schema)
    x = np.concatenate(xs) if xs else np.zeros((0, width), np.float32)
    y = np.concatenate(ys) if ys else np.zeros(0, np.float32)
    return x, y, poison, next_offsets


def _decode_into(schema: CsvSchema, messages: list[Message], xs: list[np.ndarray], ys: list[np.ndarray]) -> int:
    """Decode ``messages`` and append their rows to ``xs``/``ys``; the number of poison messages left out."""
    from include.training.decode import decode_batch

    decoded = decode_batch(schema, [m.value for m in messages])
    xs.append(decoded.x)
    ys.append(decoded.y)
    return len(decoded.errors)


def _fit(schema, x_train, y_train, x_held, y_held, *, epochs: int, batch_size: int, learning_rate: float,
         seed: int) -> dict[str, Any]:
    import keras

    from include.training.model import build_model, configure_tensorflow

    configure_tensorflow()
    keras.utils.set_random_seed(seed)  # the shuffling
    model = build_model(schema, learning_rate=learning_rate, seed=seed)
    # Several steps per call: the per-step Python overhead dominates for this small model.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy")], steps_per_execution=32)
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    held = None
    if len(y_held):
        held = float(model.evaluate(x_held, y_held, batch_size=4096, verbose=0, return_dict=True)["accuracy"])
    train = float(model.evaluate(x_train, y_train, batch_size=4096, verbose=0, return_dict=True)["accuracy"])
    return {"heldout_accuracy": held, "train_accuracy": train,
            "epoch_train_accuracy": [round(float(a), 5) for a in history.history["accuracy"]]}
