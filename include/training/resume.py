"""Resuming a model: finish what a crashed predecessor left, check the checkpoint fits this run, rebuild the learner.

Owns:

- :func:`finish_predecessor`: the newest checkpoint's history rows, drift events and checkpoint record upserted, and
  its offsets committed to the consumer group (both idempotent), so a crash after the checkpoint and before the
  group commit loses nothing;
- the compatibility checks between a checkpoint and this run: same schema id, same raw feature width, same
  learner mode and mini-batch size (a mismatch is an error that says to train a new model, never a silent restart);
- :func:`build_model_and_learner` (fresh, or restored from the checkpoint) and :func:`resume_drift_monitor`.

Never trains, never writes a checkpoint, and never follows the consumer group's offsets over the checkpoint's: the
checkpoint is the source of truth, the group only a mirror for lag tools and the UI.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from include.kafka.clients import KafkaClients
from include.schema import CsvSchema
from include.settings import Settings
from include.training.checkpoint import LoadedCheckpoint
from include.training.decode import raw_width
from include.training.drift import DriftConfig, DriftMonitor
from include.training.history_rows import RunHistory, checkpoint_row, int_offsets
from include.training.learner import IncrementalLearner
from include.training.learner_config import DEFAULT_MODE, LearnerConfig, normalise_mode
from include.training.options import TrainOptions

log = logging.getLogger(__name__)


def finish_predecessor(loaded: LoadedCheckpoint, clients: KafkaClients, settings: Settings, history: RunHistory) -> None:
    """Write the history rows and commit the offsets the newest checkpoint carries (idempotent)."""
    meta = loaded.meta
    history.write(meta.get("history", []), checkpoint=checkpoint_row(history.identity, meta),
                  drift_events=meta.get("drift_events", []))
    _commit_checkpoint_offsets(meta, clients, settings)


def _commit_checkpoint_offsets(meta: Mapping[str, Any], clients: KafkaClients, settings: Settings) -> None:
    """Commit the checkpoint's offsets to the group, warning where the group disagreed (it follows the checkpoint)."""
    from confluent_kafka import TopicPartition

    consumer = clients.consumer(settings.consumer_group, role="offsets")
    try:
        offsets = int_offsets(meta.get("offsets"))
        committed = {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition(settings.topic, p) for p in sorted(offsets)], timeout=30)}
        disagree = {p: (committed.get(p), o) for p, o in offsets.items() if committed.get(p) != o}
        if disagree:
            log.warning("consumer group %s offsets disagree with checkpoint %s as {partition: (committed, checkpoint)}: "
                        "%s; following the checkpoint and committing its offsets", settings.consumer_group,
                        meta.get("checkpoint_id"), disagree)
        if offsets:
            consumer.commit(offsets=[TopicPartition(settings.topic, p, o) for p, o in sorted(offsets.items())],
                            asynchronous=False)
    finally:
        consumer.close()


def build_model_and_learner(schema: CsvSchema, settings: Settings, options: TrainOptions,
                            loaded: LoadedCheckpoint | None) -> tuple[Any, IncrementalLearner]:
    """The model and its compiled learner: restored from ``loaded`` (after the compatibility checks), else new.

    Raises:
        RuntimeError: The checkpoint was trained for another schema, feature width, mode or mini-batch size.
    """
    if loaded is None:
        return _new_model_and_learner(schema, settings, options)
    _check_schema(loaded, schema)
    model = loaded.model
    _check_features(loaded, model, schema)
    saved = LearnerConfig.from_dict(loaded.learner_state.get("config", {}))
    _check_learner(saved, settings, options)
    # The chunk size is a speed knob, not part of the semantics: this run's applies.
    learner = IncrementalLearner(model, LearnerConfig(**{**saved.as_dict(), "chunk_batches": options.chunk_batches}))
    learner.set_state(loaded.learner_state)
    return model, learner


def _new_model_and_learner(schema: CsvSchema, settings: Settings, options: TrainOptions) -> tuple[Any, IncrementalLearner]:
    from include.training.model import build_model

    config: dict[str, Any] = dict(batch_messages=settings.batch_messages, mode=options.mode,
                                  chunk_batches=options.chunk_batches, seed=options.seed,
                                  learning_rate=options.learning_rate)
    if options.replay_buffer is not None:
        config["replay_buffer"] = options.replay_buffer
    if options.replay_steps is not None:
        config["replay_steps"] = options.replay_steps
    model = build_model(schema, seed=options.seed)
    return model, IncrementalLearner(model, LearnerConfig(**config))


def _check_schema(loaded: LoadedCheckpoint, schema: CsvSchema) -> None:
    if loaded.meta.get("schema_id") != schema.id:
        raise RuntimeError(f"checkpoint {loaded.meta.get('checkpoint_id')} is for schema {loaded.meta.get('schema_id')}, "
                           f"not {schema.id}; use another model name to train a new model")


def _check_features(loaded: LoadedCheckpoint, model: Any, schema: CsvSchema) -> None:
    if int(model.inputs[0].shape[-1]) != raw_width(schema):
        raise RuntimeError(f"checkpoint {loaded.meta.get('checkpoint_id')}'s model takes {model.inputs[0].shape[-1]} raw "
                           f"features but schema {schema.id} now declares {raw_width(schema)}: the "
                           "features changed. Train a new model (another model name).")


def resolve_mode(requested: str | None, loaded: LoadedCheckpoint | None) -> str:
    """The run's learner mode: the one asked for, else the checkpoint's (a model keeps its mode), else the default.

    A mode asked for that differs from the checkpoint's is refused later, by :func:`build_model_and_learner`.
    """
    if requested is not None:
        return normalise_mode(requested)
    if loaded is not None:
        saved = loaded.learner_state.get("config", {}).get("mode")
        if saved:
            return normalise_mode(str(saved))
    return DEFAULT_MODE


def _check_learner(saved: LearnerConfig, settings: Settings, options: TrainOptions) -> None:
    if saved.mode != options.mode or saved.batch_messages != settings.batch_messages:
        raise RuntimeError(f"checkpoint was trained with mode={saved.mode} batch={saved.batch_messages}; this run asks "
                           f"mode={options.mode} batch={settings.batch_messages}. Use another model name.")


def resume_drift_monitor(options: TrainOptions, meta: Mapping[str, Any], learner: IncrementalLearner) -> DriftMonitor:
    """The drift monitor, continuing the checkpoint's statistics (``meta``'s ``drift``; none for a new model)."""
    drift = DriftMonitor(DriftConfig(reaction=options.drift, detector=options.drift_detector), meta.get("drift"))
    drift.attach(learner)
    return drift
