"""The batch ceiling of each week: how good a model trained on that week alone could be on its held-out rows.

For every ISO week (UTC) of event time in the topic: a fresh :func:`include.training.model.build_model` is trained
for several epochs on the week's training rows and evaluated on the week's held-out rows, the rows split as the
incremental learner splits them (per mini-batch of the stream, the first 80 % train). It is the reference an
incremental learner's end-of-week window accuracy is compared with: a learner within a point or two of it has
learned what the week's data allows. :func:`ceilings_of_rows` does the same on rows already in memory (the
generalisation benchmark's streams). :func:`weekly_ceilings` reads the topic from its earliest offsets with its own consumer group
(nothing is committed), trains nothing that is kept, writes nothing.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

import numpy as np

from include.kafka.clients import KafkaClients
from include.kafka.reader import BoundedReader
from include.schema import load_schema
from include.settings import Settings
from include.training.baseline import split_rows

log = logging.getLogger(__name__)


def iso_week(epoch_ms: int) -> str:
    """``YYYY-Www`` of an event time (UTC)."""
    return iso_week_of_day(date(1970, 1, 1) + timedelta(milliseconds=int(epoch_ms)))


def iso_week_of_day(day: date) -> str:
    """``YYYY-Www`` of a calendar day."""
    iso = day.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def weekly_ceilings(settings: Settings, *, epochs: int = 20, seed: int = 0,
                    max_records: int | None = 2_000_000) -> dict[str, dict[str, Any]]:
    """Per ISO week of event time: ``{"train_rows", "heldout_rows", "accuracy"}`` of a model trained on that week.

    Args:
        settings: Project settings (topic, schema, mini-batch size, Kafka).
        epochs: Passes over each week's training rows.
        seed: Initial weights and shuffling.
        max_records: Read at most this many records.
    """
    schema = load_schema(settings.schema_name)
    x, y, times = _read(settings, schema, max_records)
    if len(y) == 0:
        return {}
    weeks = np.array([iso_week(t) for t in times])
    return ceilings_of_rows(schema, x, y, weeks, batch_messages=settings.batch_messages, epochs=epochs, seed=seed)


def ceilings_of_rows(schema: Any, x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, batch_messages: int,
                     epochs: int = 20, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per group of rows (a week, usually): ``{"train_rows", "heldout_rows", "accuracy"}`` of a model trained on it.

    Args:
        schema: Decodes the rows' layout for the model.
        x: Raw feature rows in stream order (:func:`include.training.decode.decode_batch`).
        y: Their labels.
        groups: One label per row (e.g. its ISO week); each group gets its own model.
        batch_messages: The stream's mini-batch size: the rows are split 80/20 per mini-batch, as the learner does.
        epochs: Passes over each group's training rows.
        seed: Initial weights and shuffling.
    """
    from include.training.baseline import _fit

    train = split_rows(len(y), batch_messages, 0.8)
    out: dict[str, dict[str, Any]] = {}
    for week in sorted(set(groups.tolist())):
        in_week = groups == week
        tr, held = in_week & train, in_week & ~train
        if tr.sum() < 100 or held.sum() < 20:
            continue
        fit = _fit(schema, x[tr], y[tr], x[held], y[held], epochs=epochs, batch_size=32, learning_rate=1e-3,
                   seed=seed)
        out[week] = {"train_rows": int(tr.sum()), "heldout_rows": int(held.sum()),
                     "accuracy": fit["heldout_accuracy"]}
        log.info("batch ceiling of %s: %.4f on %d held-out rows", week, fit["heldout_accuracy"], held.sum())
    return out


def _read(settings: Settings, schema: Any, max_records: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every decodable record with its event time (the message timestamp, which ingest sets to the row's time)."""
    from include.training.decode import decode_batch, raw_width

    clients = KafkaClients(settings)
    reader = BoundedReader(clients, settings.topic, f"{settings.consumer_group}.ceiling", start_offsets={},
                           stream_timeout_s=settings.stream_timeout_s, max_records=max_records)
    xs, ys, ts = [], [], []
    try:
        reader.open()
        for batch in reader.batches(20_000):
            decoded = decode_batch(schema, [m.value for m in batch])
            stamps = np.array([m.timestamp_ms or 0 for m in batch], dtype=np.int64)
            xs.append(decoded.x)
            ys.append(decoded.y)
            ts.append(stamps[decoded.good])
    finally:
        reader.close()
    if not xs:
        return np.zeros((0, raw_width(schema)), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ts)
