"""Handing a trained checkpoint over to the model lifecycle: one immutable version per run that trained something.

Owns the step at the end of a training run (:func:`register_checkpoint`): the in-memory model of the newest
checkpoint the run saved becomes a version (:func:`include.lifecycle.versions.register_version`) with what the
checkpoint's meta says it has seen (offsets, records, event-time range over all runs, the newest accuracies) and
the rows its run held out: the newest ``min(window rows, rows held out by this run)`` rows of the learner's
evaluation window, oldest first. Those rows were never trained on; the promotion gate judges the previous candidate
on them (:mod:`include.lifecycle.gate`). Then old version folders are pruned.

Crash safety: the checkpoint is written before the version, so a run killed between the two leaves a checkpoint
without a version. The next run calls :func:`catch_up` before it trains: the newest checkpoint, if its run meant to
register (``coverage.register`` in its meta) and no version records it, is registered from the checkpoint (same
model, same window, same counts: the same version the killed run would have made). Never trains, never reads Kafka
and never decides what is served.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from include.lifecycle.pruning import prune_versions
from include.lifecycle.registry import Registry, VersionInfo
from include.lifecycle.versions import VersionSource, register_version, version_for_checkpoint
from include.settings import Settings

log = logging.getLogger(__name__)


def run_holdout(learner: Any, held_out_this_run: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows the run held out and still in the window: its newest ``min(count, held_out_this_run)``, oldest first."""
    x, y = learner.window()
    keep = max(0, min(len(y), int(held_out_this_run)))
    return x[len(y) - keep:], y[len(y) - keep:]


def version_source(meta: Mapping[str, Any], holdout: tuple[np.ndarray, np.ndarray]) -> VersionSource:
    """A version's facts from a checkpoint's meta (as :class:`include.training.durability.Durability` writes it)."""
    coverage = meta.get("coverage") or {}
    return VersionSource(
        checkpoint_id=str(meta["checkpoint_id"]), run_id=meta.get("run_id"), schema_id=str(meta["schema_id"]),
        topic=str(meta["topic"]), offsets={str(k): int(v) for k, v in (meta.get("offsets") or {}).items()},
        records_total=int(meta.get("records_total", 0)), event_time_min=coverage.get("event_time_min"),
        event_time_max=coverage.get("event_time_max"),
        metrics={"window_accuracy": coverage.get("window_accuracy"),
                 "prequential_accuracy": coverage.get("prequential_accuracy"),
                 "holdout_rows": int(len(holdout[1]))},
        holdout=holdout,
    )


def register_checkpoint(settings: Settings, model_name: str, model: Any, learner: Any,
                        meta: Mapping[str, Any]) -> VersionInfo:
    """Register the checkpoint ``meta`` describes (its model and learner in memory) and prune old folders.

    Idempotent: a checkpoint that has a version already returns it.
    """
    registry = Registry(settings)
    holdout = run_holdout(learner, int((meta.get("coverage") or {}).get("held_out_this_run") or 0))
    info = register_version(registry, model_name, model, version_source(meta, holdout))
    prune_versions(registry, model_name, keep=settings.keep_versions)
    return info


def needs_catch_up(settings: Settings, model_name: str, meta: Mapping[str, Any]) -> bool:
    """Whether the newest checkpoint was written by a registering run and has no version."""
    if not (meta.get("coverage") or {}).get("register") or not meta.get("checkpoint_id"):
        return False
    return version_for_checkpoint(Registry(settings), model_name, str(meta["checkpoint_id"])) is None


def catch_up(settings: Settings, model_name: str, loaded: Any, build: Any) -> VersionInfo | None:
    """Register the newest checkpoint if a killed run left it without a version (see the module docstring).

    Args:
        settings: Project settings.
        model_name: The model name.
        loaded: The newest :class:`include.training.checkpoint.LoadedCheckpoint`.
        build: ``build(loaded) -> (model, learner)`` restored from it (the trainer's own resume path).
    """
    if not needs_catch_up(settings, model_name, loaded.meta):
        return None
    log.warning("checkpoint %s ended a run but has no model version (the run was stopped before it registered "
                "one): registering it now", loaded.meta["checkpoint_id"])
    model, learner = build(loaded)
    return register_checkpoint(settings, model_name, model, learner, loaded.meta)
