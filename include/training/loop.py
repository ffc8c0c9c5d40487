"""The read-train loop: fetched messages in, a trained model, history rows and next offsets out.

Owns :class:`ReadTrainLoop`, which gathers the reader's fetches (columns, no object per message) into chunks of
``chunk_batches`` mini-batches, cuts the mini-batches (every ``batch_messages`` messages of the stream, whatever the
fetches; or one per fetch for tensorflow-io) and, per chunk: decodes the values, dead-letters the poison messages,
runs the learner under the drift monitor, appends one history row per mini-batch (and one per drift detection) to
:class:`Progress`, and advances its next offsets (numpy over the chunk's offsets, not Python per message). It logs progress every few seconds and asks :class:`include.training.durability.Durability` to save
every ``checkpoint_every_s`` seconds or :data:`CHECKPOINT_EVERY_BATCHES` mini-batches.

Never reads Kafka itself (the caller hands it the fetches), never writes a checkpoint or a history row other
than through :class:`Durability`, and never moves an offset past a message it has not trained or dead-lettered.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Sequence

import numpy as np

from include import faults
from include.kafka.dead_letters import DeadLetters
from include.kafka.records import Records
from include.schema import CsvSchema
from include.training.chunks import Fetched, Pending
from include.training.decode import Decoded
from include.training.drift import Detection, DriftMonitor
from include.training.durability import Durability, Progress
from include.training.history_rows import RunIdentity, batch_rows, drift_row
from include.training.learner import IncrementalLearner
from include.training.learner_config import BatchMetrics, split_sizes
from include.training.options import StageTimes, TrainSummary

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0
# Also checkpoint once this many mini-batches' history rows are pending: they are held in memory and in the
# checkpoint until it is durable, so a time-only cadence would make memory grow with throughput. 5,000 rows are
# about 8 MB and half a million records: at 150,000 records/s a checkpoint every ~3 s, not every ~1.3 s (each costs
# ~0.2 s: the model saved, the bundle fsynced, the rows upserted, the offsets committed).
CHECKPOINT_EVERY_BATCHES = 5_000


class ReadTrainLoop:
    """Trains on a run's mini-batches a chunk at a time (see the module docstring).

    Args:
        schema: Decodes the message values.
        learner: The compiled learner.
        drift: Runs the learner and watches its prequential error.
        dead_letters: Where poison messages go.
        durability: Saves progress on the checkpoint cadence.
        progress: What is not durable yet; this loop appends to it and advances its offsets.
        summary: The run's report; this loop counts records, mini-batches, poison and drift events in it.
        identity: The run, for the history rows.
        chunk_messages: Train once this many messages are pending (``batch_messages * chunk_batches``).
        checkpoint_every_s: Save at least this often.
        timings: Where the loop adds its time per stage (``decode``, ``train``, ``durability``, ``wait for
            reading``).

    Attributes:
        last_metrics: The newest mini-batch's metrics (None before the first).
    """

    def __init__(self, *, schema: CsvSchema, learner: IncrementalLearner, drift: DriftMonitor,
                 dead_letters: DeadLetters, durability: Durability, progress: Progress, summary: TrainSummary,
                 identity: RunIdentity, chunk_messages: int, checkpoint_every_s: float,
                 timings: StageTimes | None = None) -> None:
        self.schema, self.learner, self.drift = schema, learner, drift
        self.dead_letters, self.durability = dead_letters, durability
        self.progress, self.summary, self.identity = progress, summary, identity
        self.chunk_messages, self.checkpoint_every_s = chunk_messages, checkpoint_every_s
        self.last_metrics: BatchMetrics | None = None
        self.timings = timings if timings is not None else StageTimes()
        self._pending = Pending(schema)
        self._fetch_is_batch = False
        self._last_log = self._last_checkpoint = time.monotonic()
        self._started = time.perf_counter()

    def run(self, fetches: Iterable[Records | Fetched], *, fetch_is_batch: bool = False) -> None:
        """Train on ``fetches`` a full chunk at a time; the last, partial chunk waits for :meth:`train_pending`.

        Args:
            fetches: The messages, in consumption order, decoded already or not.
            fetch_is_batch: Each fetch is one mini-batch (tensorflow-io's); otherwise mini-batches are cut every
                ``batch_messages`` messages of the stream, whatever the fetches, and a chunk is exactly
                ``chunk_messages`` messages.
        """
        self._fetch_is_batch = fetch_is_batch
        waited = time.perf_counter()
        for fetched in fetches:
            self.timings.add("wait for reading", time.perf_counter() - waited)
            self._pending.add(fetched)
            while self._pending.messages >= self.chunk_messages:
                self.train_pending(limit=self.chunk_messages)
                self._after_chunk()
            waited = time.perf_counter()

    def seconds(self) -> float:
        """Seconds since the loop was made (the training clock of the run's log lines)."""
        return time.perf_counter() - self._started

    def train_pending(self, limit: int | None = None) -> None:
        """Train on the messages gathered so far (the first ``limit`` of them when cutting by count), and record them."""
        if not self._pending.parts:
            return
        clock = time.perf_counter()
        records, sizes, decoded = self._take(limit)
        x, y, good_sizes = self._dead_letter(records, sizes, decoded)
        self.timings.add("decode", time.perf_counter() - clock)
        clock = time.perf_counter()
        metrics, detections = self.drift.process(self.learner, x, y, good_sizes)
        self.timings.add("train", time.perf_counter() - clock)
        faults.reached("train_after_step")
        first_row = len(self.progress.history)
        self._record_batches(records, sizes, metrics)
        self._record_detections(detections, first_row)
        self.summary.poison = self.dead_letters.count

    def _take(self, limit: int | None) -> tuple[Records, list[int], Decoded]:
        """The next chunk's messages, mini-batch sizes and decoded rows, taken from the pending ones."""
        if self._fetch_is_batch:
            sizes = self._pending.sizes()
            records, decoded = self._pending.take()
            return records, sizes, decoded
        records, decoded = self._pending.take(limit)
        return records, split_sizes(len(records), self.learner.config.batch_messages), decoded

    def _dead_letter(self, records: Records, sizes: list[int], decoded: Decoded) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """The chunk's rows, poison left out (and dead-lettered), with the good rows of every mini-batch."""
        for index, reason in decoded.errors:
            self.dead_letters.send(records.message(index), reason)
        if not decoded.errors:
            return decoded.x, decoded.y, list(sizes)
        good = np.zeros(len(records) + 1, dtype=np.int64)
        good[decoded.good + 1] = 1
        good = np.cumsum(good)  # good[i]: good messages before message i
        bounds = np.cumsum([0] + list(sizes))
        return decoded.x, decoded.y, (good[bounds[1:]] - good[bounds[:-1]]).tolist()

    def _record_batches(self, records: Records, sizes: list[int], metrics: Sequence[BatchMetrics]) -> None:
        """One history row per mini-batch; next offsets and counters move past them."""
        progress, summary = self.progress, self.summary
        rows = batch_rows(self.identity, records, sizes, metrics, seq=progress.records_total, index=summary.batches)
        for row, m in zip(rows, metrics):
            progress.add_batch(row)
            summary.trained_rows += m.n
            self.last_metrics = m
        for partition, offset in records.next_offsets().items():
            if offset > progress.next_offsets.get(partition, -1):
                progress.next_offsets[partition] = offset
        progress.records_total += len(records)
        summary.batches += len(rows)
        summary.records += len(records)

    def _record_detections(self, detections: Sequence[Detection], first_row: int) -> None:
        """One drift event per detection, keyed like the mini-batch row that fired it (from ``first_row`` on)."""
        history = self.progress.history
        for det in detections:
            row = history[first_row + det.index]
            event = drift_row(self.identity, row, det)
            self.progress.drift_events.append(event)
            self.summary.drift_events += 1
            if det.reaction == "recall":
                log.warning("an earlier concept returned at records %d-%d: the model stored before a past drift "
                            "predicted the last %d rows at %s against the live model's %s, and takes over",
                            event["seq"], event["seq"] + row["n"], det.rows_since_change, _fmt(det.accuracy_after),
                            _fmt(det.accuracy_before))
                continue
            log.warning("drift detected by %s at records %d-%d (%d rows after the estimated change): prequential "
                        "accuracy %s -> %s; reaction %s", det.detector, event["seq"], event["seq"] + row["n"],
                        det.rows_since_change, _fmt(det.accuracy_before), _fmt(det.accuracy_after), det.reaction)

    def _after_chunk(self) -> None:
        """Log progress and save on their cadences."""
        now = time.monotonic()
        if now - self._last_log >= PROGRESS_EVERY_S:
            self._last_log = now
            self._log_progress()
        if now - self._last_checkpoint >= self.checkpoint_every_s or len(self.progress.history) >= CHECKPOINT_EVERY_BATCHES:
            self._last_checkpoint = now
            with self.timings.measure("durability"):
                self.durability.save(self.progress, self.summary)

    def _log_progress(self) -> None:
        # bench/bench_training.py reads the record count of these lines: keep "progress: <n> records".
        m = self.last_metrics
        log.info("progress: %d records (%.0f records/s), window accuracy %.4f, prequential %.4f, offsets %s",
                 self.summary.records, self.summary.records / self.seconds(), m.window_accuracy, m.prequential_accuracy,
                 self.progress.next_offsets)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

