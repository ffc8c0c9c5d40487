"""The read-train loop: mini-batches in, a trained model, history rows and next offsets out.

Owns :class:`ReadTrainLoop`, which gathers the reader's mini-batches into chunks of about ``chunk_batches``
mini-batches and, per chunk: decodes the values, dead-letters the poison messages, runs the learner under the drift
monitor, appends one history row per mini-batch (and one per drift detection) to :class:`Progress`, and advances its
next offsets. It logs progress every few seconds and asks :class:`include.training.durability.Durability` to save
every ``checkpoint_every_s`` seconds or :data:`CHECKPOINT_EVERY_BATCHES` mini-batches.

Never reads Kafka itself (the caller hands it the mini-batches), never writes a checkpoint or a history row other
than through :class:`Durability`, and never moves an offset past a message it has not trained or dead-lettered.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Sequence

import numpy as np

from include import faults
from include.kafka.dead_letters import DeadLetters
from include.kafka.reader import Message
from include.schema import CsvSchema
from include.training.decode import decode_batch
from include.training.drift import Detection, DriftMonitor
from include.training.durability import Durability, Progress
from include.training.history_rows import RunIdentity, batch_row, drift_row
from include.training.learner import IncrementalLearner
from include.training.learner_config import BatchMetrics
from include.training.options import TrainSummary

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0
# Also checkpoint once this many mini-batches' history rows are pending: they are held in memory and in the
# checkpoint until it is durable, so a time-only cadence would make memory grow with throughput.
CHECKPOINT_EVERY_BATCHES = 2_000


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

    Attributes:
        last_metrics: The newest mini-batch's metrics (None before the first).
    """

    def __init__(self, *, schema: CsvSchema, learner: IncrementalLearner, drift: DriftMonitor,
                 dead_letters: DeadLetters, durability: Durability, progress: Progress, summary: TrainSummary,
                 identity: RunIdentity, chunk_messages: int, checkpoint_every_s: float) -> None:
        self.schema, self.learner, self.drift = schema, learner, drift
        self.dead_letters, self.durability = dead_letters, durability
        self.progress, self.summary, self.identity = progress, summary, identity
        self.chunk_messages, self.checkpoint_every_s = chunk_messages, checkpoint_every_s
        self.last_metrics: BatchMetrics | None = None
        self._pending: list[list[Message]] = []
        self._pending_messages = 0
        self._last_log = self._last_checkpoint = time.monotonic()
        self._started = time.perf_counter()

    def run(self, batches: Iterable[list[Message]]) -> None:
        """Train on ``batches`` a full chunk at a time; the last, partial chunk waits for :meth:`train_pending`."""
        for batch in batches:
            self._pending.append(batch)
            self._pending_messages += len(batch)
            if self._pending_messages >= self.chunk_messages:
                self.train_pending()
                self._after_chunk()

    def seconds(self) -> float:
        """Seconds since the loop was made (the training clock of the run's log lines)."""
        return time.perf_counter() - self._started

    def train_pending(self) -> None:
        """Train on the mini-batches gathered so far, and record them."""
        if not self._pending:
            return
        messages = [m for batch in self._pending for m in batch]
        x, y, sizes = self._decode(messages)
        metrics, detections = self.drift.process(self.learner, x, y, sizes)
        faults.reached("train_after_step")
        first_row = len(self.progress.history)
        self._record_batches(metrics)
        self._record_detections(detections, first_row)
        self.summary.poison = self.dead_letters.count
        self._pending.clear()
        self._pending_messages = 0

    def _decode(self, messages: list[Message]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """The chunk's rows, poison left out (and dead-lettered), with the good rows of every mini-batch."""
        decoded = decode_batch(self.schema, [m.value for m in messages])
        for index, reason in decoded.errors:
            self.dead_letters.send(messages[index], reason)
        good = np.zeros(len(messages), dtype=bool)
        good[decoded.good] = True
        sizes, start = [], 0
        for batch in self._pending:
            end = start + len(batch)
            sizes.append(int(good[start:end].sum()))
            start = end
        return decoded.x, decoded.y, sizes

    def _record_batches(self, metrics: Sequence[BatchMetrics]) -> None:
        """One history row per mini-batch; next offsets and counters move past it."""
        progress, summary = self.progress, self.summary
        for batch, m in zip(self._pending, metrics):
            progress.add_batch(batch_row(self.identity, batch, m, seq=progress.records_total, index=summary.batches))
            for msg in batch:
                if msg.offset + 1 > progress.next_offsets.get(msg.partition, -1):
                    progress.next_offsets[msg.partition] = msg.offset + 1
            progress.records_total += len(batch)
            summary.batches += 1
            summary.records += len(batch)
            summary.trained_rows += m.n
            self.last_metrics = m

    def _record_detections(self, detections: Sequence[Detection], first_row: int) -> None:
        """One drift event per detection, keyed like the mini-batch row that fired it (from ``first_row`` on)."""
        history = self.progress.history
        for det in detections:
            row = history[first_row + det.index]
            event = drift_row(self.identity, row, det)
            self.progress.drift_events.append(event)
            self.summary.drift_events += 1
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
            self.durability.save(self.progress, self.summary)

    def _log_progress(self) -> None:
        # bench/bench_training.py reads the record count of these lines: keep "progress: <n> records".
        m = self.last_metrics
        log.info("progress: %d records (%.0f records/s), window accuracy %.4f, prequential %.4f, offsets %s",
                 self.summary.records, self.summary.records / self.seconds(), m.window_accuracy, m.prequential_accuracy,
                 self.progress.next_offsets)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

