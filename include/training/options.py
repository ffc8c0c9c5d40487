"""What a training run is asked to do, what it reports, and the one error that means "another trainer".

Owns: :class:`TrainOptions` (a run's knobs), :class:`TrainSummary` (its report, also the command line's JSON) and
:class:`TrainerBusy`. Plain data only: this module never reads the environment, Kafka, the database or a checkpoint,
and imports nothing heavy, so the command line can name :class:`TrainerBusy` without loading TensorFlow.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from include.training.drift_detectors import DEFAULT_DETECTOR, DETECTORS

#: What the trainer may do about a detected drift (:mod:`include.training.drift` applies them), and the default: the
#: one home of both, read by the drift monitor, the command line and the training DAG's params.
DRIFT_REACTIONS = ("none", "shrink", "retrain")
DEFAULT_DRIFT_REACTION = "shrink"
__all__ = ["DEFAULT_DETECTOR", "DEFAULT_DRIFT_REACTION", "DETECTORS", "DRIFT_REACTIONS", "TrainOptions", "TrainSummary",
           "TrainerBusy"]


class TrainerBusy(RuntimeError):
    """Another trainer holds the lock or advanced the checkpoint: this run changed nothing."""


@dataclass
class TrainOptions:
    """What a run does. Mini-batches of 100 as in the blog; the mode that learns (``replay``) for a new model.

    Attributes:
        model_name: The model's own checkpoint folder and history curve.
        mode: ``replay`` (learns: the default for a new model) or ``single_pass`` (the blog's; ``seed`` before);
            None: the model's own mode, from its checkpoint (see :mod:`include.training.learner_config`).
        reader: ``confluent`` (explicit offsets) or ``tfio`` (tensorflow-io's reader, the seed's).
        max_records: Stop after this many records (confluent reader only).
        max_seconds: Stop after this long (confluent reader only).
        checkpoint_every_s: Make progress durable at least this often.
        chunk_batches: Mini-batches per compiled learner call.
        learning_rate: Assigned to a new model's optimizer; None keeps the model's own.
        replay_buffer: Replay rows kept (replay mode, new models); None keeps the learner's default.
        replay_steps: Replay steps per mini-batch (replay mode, new models); None keeps the learner's default.
        keep_checkpoints: Complete checkpoint bundles kept on disk.
        seed: Seeds a new model's weights and the replay draws.
        drift: Reaction to a detected drift: ``shrink`` (default) | ``none`` | ``retrain`` (detection always runs).
        drift_detector: ``ewma`` | ``page_hinkley`` (:data:`include.training.drift_detectors.DETECTORS`).
        register: End a run that saved a checkpoint with a new model version (:mod:`include.training.versioning`),
            and first register the newest checkpoint if a killed registering run left it without one.
        stop_offsets: ``{partition: offset}`` not to read at or past (confluent reader only): a rebuild's run stops
            exactly where the promotion gate compares its lineage with the live one (:mod:`include.rebuild.training`).
    """

    model_name: str = "default"
    mode: str | None = None  # replay | single_pass; None: the checkpoint's, else replay
    reader: str = "confluent"  # confluent | tfio
    max_records: int | None = None
    max_seconds: float | None = None
    checkpoint_every_s: float = 60.0
    chunk_batches: int = 32  # a compiled call of 32 mini-batches: see include.training.learner_config
    learning_rate: float | None = None
    replay_buffer: int | None = None
    replay_steps: int | None = None
    keep_checkpoints: int = 3
    seed: int = 0
    drift: str = DEFAULT_DRIFT_REACTION  # one of DRIFT_REACTIONS (detection always runs)
    drift_detector: str = DEFAULT_DETECTOR  # one of include.training.drift_detectors.DETECTORS
    register: bool = True
    stop_offsets: dict[int, int] | None = None


@dataclass
class TrainSummary:
    """What one run did; :meth:`as_dict` is what the command line prints and the DAG task returns.

    Attributes:
        run_id: This run's id (its ``training_runs`` row).
        status: ``running`` while it trains, then ``success`` or ``failed``.
        stop_reason: Why reading stopped (``include.kafka.reader.STOP_*``), None before it did.
        records: Messages read and trained or dead-lettered.
        trained_rows: Rows the learner received (poison messages left out).
        poison: Messages dead-lettered.
        batches: Mini-batches trained.
        offsets_from: The next offset of every partition at start (the checkpoint's).
        offsets_to: The next offsets of the newest checkpoint this run made durable.
        end_offsets_at_start: The end offsets seen at start: nothing at or past them is read.
        checkpoint_from: The checkpoint this run resumed from.
        checkpoint_id: The newest checkpoint when the run ended.
        window_accuracy: The last mini-batch's held-out window accuracy.
        prequential_accuracy: The last mini-batch's prequential accuracy (before training on it).
        drift_events: Drift detections during this run.
        version: The model version this run registered (None: it made none, or did not register).
        seconds: The whole run, lock to summary.
        records_per_s: ``records / seconds``.
        timings: Seconds per stage of the run (:class:`StageTimes`), to see where the time went.
    """

    run_id: str
    status: str
    stop_reason: str | None
    records: int = 0
    trained_rows: int = 0
    poison: int = 0
    batches: int = 0
    offsets_from: dict[str, int] = field(default_factory=dict)
    offsets_to: dict[str, int] = field(default_factory=dict)
    end_offsets_at_start: dict[str, int] = field(default_factory=dict)
    checkpoint_from: str | None = None
    checkpoint_id: str | None = None
    window_accuracy: float | None = None
    prequential_accuracy: float | None = None
    drift_events: int = 0
    version: int | None = None
    seconds: float = 0.0
    records_per_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StageTimes:
    """Seconds spent per stage of a run (``start-up``, ``compile``, ``decode``, ``train``, ``durability``...).

    Stages of one thread add up; the reader thread's own time (``read``) overlaps the main thread's and is reported
    beside it, with the main thread's ``wait for reading``.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)

    def as_dict(self) -> dict[str, float]:
        return {stage: round(seconds, 3) for stage, seconds in self.seconds.items()}
