"""The lifecycle steps of the ``train_model`` DAG after training: evaluate, then promote or reject.

Each function is one task's whole body, so the DAG file stays wiring. :func:`evaluate_step` runs the gate
(:mod:`include.lifecycle.gate`): it records what needs no branch (older candidates superseded, a candidate that
waits for more rows) and returns the task to follow, ``promote`` or ``reject``, or None when nothing was decided.
:func:`decision_step` re-judges (the gate reads immutable version files, so the numbers are the same) and records
the decision; a retried task records nothing twice. Never trains.
"""

from __future__ import annotations

import logging
from typing import Any

from include.lifecycle import gate
from include.lifecycle.registry import Registry
from include.settings import Settings, get_settings

log = logging.getLogger(__name__)

TASK_FOR = {"promote": "promote", "reject": "reject"}


def evaluate_step(model_name: str, settings: Settings | None = None) -> str | None:
    """Run the gate's evaluation; the next task's id (``promote`` / ``reject``) or None (nothing to decide)."""
    registry = Registry(settings or get_settings())
    judgements = gate.judge(registry, model_name)
    for judgement in judgements:
        log.info("gate: version %d: %s (%s) %s", judgement.version, judgement.decision, judgement.reason,
                 judgement.gate or "")
        if judgement.decision not in TASK_FOR:
            gate.record(registry, judgement)
    final = judgements[-1] if judgements else None
    if final is None or final.decision not in TASK_FOR:
        log.info("gate: no candidate to promote or reject for model %s", model_name)
        return None
    return TASK_FOR[final.decision]


def decision_step(model_name: str, decision: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """Record the gate's ``decision`` (``promote`` or ``reject``) for the candidate it is about; its judgement."""
    registry = Registry(settings or get_settings())
    judgements = [j for j in gate.judge(registry, model_name) if j.decision in TASK_FOR]
    if not judgements:
        log.info("gate: nothing left to %s for model %s (recorded already)", decision, model_name)
        return None
    judgement = judgements[-1]
    if judgement.decision != decision:
        log.warning("gate: the candidate's judgement is now %s, not %s: recording %s", judgement.decision, decision,
                    judgement.decision)
    gate.record(registry, judgement)
    return judgement.as_dict()
