"""The end of a rebuild: the promotion gate against the live champion, then the switch or the rejection.

Once the rebuild's lineage has a version at the gate's point (:mod:`include.rebuild.training`), that version and the
live champion score the live lineage's newest held-out rows (rows neither trained on) with the promotion gate's
rule (:func:`include.lifecycle.gate.judge_against`: tolerance, floor, minimum rows; McNemar's test as evidence):

* **promote**: :func:`include.lifecycle.generations.switch`, one transaction: the new generation is live, its
  lineage's champion is the judged version, the old generation is ``standby`` (kept for switching back, up to
  ``RETRAIN_KEEP_GENERATIONS``), the rebuild ``switched``. Files left out of the rebuild (older than what it holds)
  are recorded as waiting in the new live ledger, for the next rebuild. Retired generations' topics are deleted after
  the commit (:mod:`include.rebuild.retention`).
* **reject**: the rebuild is ``rejected`` with the reason and both accuracies, its generation ``rejected``, an alert
  (``rebuild_rejected``) is recorded for the live model; the live generation is untouched.
* **wait**: too few rows, or no rows neither model trained on yet (the live champion is the live lineage's newest
  version): the rebuild stays in ``gating`` and says why; the next run of the rebuild looks again.

Re-running a decided rebuild decides nothing twice (the records and the switch are idempotent). Never trains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from include.history import db
from include.ingest.ledger import WAITING, Ledger
from include.lifecycle.alerts import record_alert
from include.lifecycle.gate import judge_against
from include.lifecycle.generations import switch
from include.lifecycle.registry import Registry
from include.rebuild import records
from include.rebuild.records import RebuildInfo
from include.rebuild.training import candidate_at, gate_point
from include.settings import Settings

log = logging.getLogger(__name__)

ACTOR = "gate"


@dataclass(frozen=True)
class Decision:
    rebuild_id: int
    decision: str  # switch | reject | wait
    reason: str
    gate: dict[str, Any] | None = None
    candidate_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def judge(settings: Settings, registry: Registry, rebuild: RebuildInfo) -> Decision:
    """The gate's verdict on the rebuild now (reads only)."""
    where = gate_point(settings, registry, rebuild)
    if where.waiting is not None:
        return Decision(rebuild.id, "wait", where.waiting)
    candidate = candidate_at(registry, rebuild.lineage, where.point)
    if candidate is None:
        return Decision(rebuild.id, "wait", f"the lineage {rebuild.lineage!r} has no version at the gate's point "
                                            f"{_offsets(where.point)} yet: it is still training")
    champion = registry.get(where.live_lineage, where.champion)
    judgement = judge_against(registry, candidate, champion, where.evaluation)
    gate = {**(judgement.gate or {}), "candidate_model": candidate.model_name, "champion_model": champion.model_name,
            "evaluated_on_model": where.evaluation.model_name, "point": _offsets(where.point)}
    decision = {"promote": "switch", "reject": "reject"}.get(judgement.decision, "wait")
    return Decision(rebuild.id, decision, judgement.reason, gate, candidate.version)


def _offsets(offsets: dict[int, int]) -> dict[str, int]:
    return {str(p): int(o) for p, o in sorted(offsets.items())}


def decide(settings: Settings, rebuild_id: int, *, clients=None) -> Decision:
    """Judge the rebuild and record the verdict: switch, reject, or wait (see the module docstring)."""
    registry = Registry(settings)
    rebuild = records.get(registry.sessions, rebuild_id)
    if not rebuild.active:
        return Decision(rebuild.id, {"switched": "switch", "rejected": "reject"}.get(rebuild.state, rebuild.state),
                        rebuild.decision_reason or rebuild.state, rebuild.gate, rebuild.candidate_version)
    verdict = judge(settings, registry, rebuild)
    log.info("rebuild %d: %s (%s) %s", rebuild.id, verdict.decision, verdict.reason, verdict.gate or "")
    if verdict.decision == "wait":
        records.update(registry.sessions, rebuild.id, state="gating", message=f"the gate waits: {verdict.reason}",
                       gate=verdict.gate)
        return verdict
    if verdict.decision == "reject":
        _reject(registry, rebuild, verdict)
        return verdict
    _carry_waiting(registry.sessions, settings, rebuild)
    result = switch(registry.sessions, settings.topic, rebuild.generation, rebuild.model_name, actor=ACTOR,
                    reason=f"rebuild {rebuild.id} passed the gate: {verdict.reason}",
                    champion_version=verdict.candidate_version, rebuild_id=rebuild.id, gate=verdict.gate,
                    keep=settings.keep_generations)
    if result.retired:
        from include.rebuild.retention import delete_retired_topics

        delete_retired_topics(settings, clients=clients)
    return verdict


def _reject(registry: Registry, rebuild: RebuildInfo, verdict: Decision) -> None:
    gate = verdict.gate or {}
    message = (f"rebuild {rebuild.id} of {rebuild.base_topic} (generation {rebuild.generation}, {rebuild.lineage}) "
               f"rejected: version {verdict.candidate_version} {gate.get('candidate_accuracy', 0):.4f} vs the live "
               f"champion {gate.get('champion_model')} version {gate.get('champion_version')} "
               f"{gate.get('champion_accuracy', 0):.4f} on {gate.get('rows')} held-out rows; the live generation is "
               "unchanged")
    # The alert first (keyed: recorded once): a crash before the rejection is retried whole, never lost.
    record_alert(registry, gate.get("champion_model") or rebuild.model_name, "rebuild_rejected",
                 f"rebuild:{rebuild.id}:rejected", message, version=verdict.candidate_version, details=gate)
    records.reject(registry.sessions, rebuild.id, reason=f"the gate rejected it: {verdict.reason}", gate=gate,
                   candidate_version=verdict.candidate_version)


def _carry_waiting(sessions, settings: Settings, rebuild: RebuildInfo) -> None:
    """Files the rebuild had to leave out go on waiting, in the ledger of the generation that becomes live."""
    info = records.get(sessions, rebuild.id)
    if not info.files_left_out:
        return
    new_ledger = Ledger(sessions, rebuild.topic)
    for f in info.files_left_out:
        with sessions() as session:
            row = session.query(db.IngestedFile).filter_by(content_sha256=f["sha256"]).first()
        if row is None or new_ledger.get(f["sha256"]) is not None:
            continue
        new_ledger.put(content_sha256=row.content_sha256, file_name=row.file_name, file_date=row.file_date,
                       size_bytes=row.size_bytes, schema_id=row.schema_id, transactional_id=row.transactional_id,
                       dag_run_id=row.dag_run_id, status=WAITING, rows_valid=0, rows_bad=0, offsets={},
                       message=f"{row.file_name}: older than the data of rebuild {rebuild.id}: waiting for the next "
                               "rebuild")
