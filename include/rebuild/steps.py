"""The steps of a rebuild: the ``rebuild_model`` DAG's task bodies, and :func:`run_rebuild` for the command line.

``start`` (start or join a rebuild; nothing to do without one) -> ``fill`` (every file the live ledger knows plus the
waiting ones, into the new generation in date order, exactly once; then the rebuild is ``training``) -> ``train``
(bounded runs of the new lineage, from scratch, up to the live lineage's end) -> ``decide`` (follow the live
generation's new files and runs, then the gate: switch, reject or wait). Each step reads the rebuild's record and
what exists (ledgers, checkpoints, versions), never the wall clock, so a retried or repeated step continues where
the last one stopped and duplicates nothing; a step of a finished rebuild does nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from include.history import db
from include.ingest.errors import IngestError
from include.kafka.clients import KafkaClients
from include.lifecycle.generations import Generations, mark_retired
from include.rebuild import records
from include.rebuild.decide import Decision, decide
from include.rebuild.fill import append_missing, counts, generation_lock
from include.rebuild.records import RebuildInfo
from include.rebuild.retention import delete_retired_topics
from include.rebuild.training import train_lineage
from include.schema import load_schema
from include.settings import Settings, get_settings

log = logging.getLogger(__name__)


def start_step(settings: Settings | None = None, *, reason: str | None = None, actor: str = "airflow",
               model_name: str | None = None, use_airflow: bool = False) -> dict[str, Any] | None:
    """The active rebuild as a dict (a ``reason`` requests one: it starts one or joins the active one); None when
    there is no rebuild to work on. Retires what retention does not keep and deletes its topics."""
    settings = settings or get_settings()
    sessions = db.session_factory(settings.db_url)
    if reason:
        info, joined = records.request(sessions, settings.topic, model_name or settings.rebuild_model, reason=reason,
                                       actor=actor)
        log.info("rebuild %d (generation %d): %s", info.id, info.generation,
                 "joined the running rebuild" if joined else "started")
    else:
        info = records.active(sessions, settings.topic)
    with sessions.begin() as session:
        retired = mark_retired(session, settings.topic, keep=settings.keep_generations)
    if retired:
        delete_retired_topics(settings, use_airflow=use_airflow)
    if info is None:
        log.info("no rebuild of %s is requested or running: nothing to do", settings.topic)
        return None
    return info.as_dict()


def _active(settings: Settings, rebuild_id: int) -> RebuildInfo | None:
    info = records.get(db.session_factory(settings.db_url), rebuild_id)
    if not info.active:
        log.info("rebuild %d is %s already: nothing to do", info.id, info.state)
        return None
    return info


def fill_step(rebuild_id: int, settings: Settings | None = None, *, use_airflow: bool = False,
              dag_run_id: str | None = None, clients: KafkaClients | None = None) -> dict[str, Any]:
    """Ingest what the rebuild's generation lacks, in date order, under its lock; the rebuild is then ``training``
    (from ``requested`` / ``ingesting``), so live ingests append their new files to it themselves from then on."""
    settings = settings or get_settings()
    rebuild = _active(settings, rebuild_id)
    if rebuild is None:
        return {"rebuild_id": rebuild_id, "skipped": True}
    sessions = db.session_factory(settings.db_url)
    if rebuild.state == "requested":
        records.update(sessions, rebuild.id, state="ingesting", message=f"ingesting every file into {rebuild.topic}")
    clients = clients or KafkaClients(settings, use_airflow=use_airflow)
    schema = load_schema(settings.schema_name)
    with generation_lock(settings, rebuild.topic, wait=True):
        live = Generations(sessions, settings.topic).live()
        live_topic = Generations(sessions, settings.topic).get(live).topic

        def progress(_file) -> None:
            records.update(sessions, rebuild.id, **counts(sessions, live_topic, rebuild.topic))

        try:
            filled = append_missing(settings, clients, sessions, schema, source_generation=live,
                                    target_generation=rebuild.generation, include_waiting=True,
                                    dag_run_id=dag_run_id, on_file=progress)
        except IngestError as exc:  # shown with the rebuild until a rerun gets past it
            records.update(sessions, rebuild.id, message=f"stopped: {exc}")
            raise
        now = records.get(sessions, rebuild.id)
        state = "training" if now.state in ("requested", "ingesting") else now.state
        done = records.update(sessions, rebuild.id, state=state, **counts(sessions, live_topic, rebuild.topic),
                              message=f"{rebuild.topic} holds every file in date order; training {rebuild.lineage}")
    log.info("rebuild %d: %d file(s), %d rows appended to %s now (%d of %d files in it, %d rows; %d left out)",
             rebuild.id, len(filled.files), filled.rows, rebuild.topic, done.files_ingested, done.files_planned,
             done.rows_ingested, len(done.files_left_out))
    return {"rebuild_id": rebuild.id, **filled.as_dict(), "files_ingested": done.files_ingested,
            "files_planned": done.files_planned, "rows_ingested": done.rows_ingested}


def train_step(rebuild_id: int, settings: Settings | None = None, *, use_airflow: bool = False,
               dag_id: str | None = None, dag_run_id: str | None = None, mode: str | None = None,
               max_runs: int | None = None) -> dict[str, Any]:
    """Bounded runs of the rebuild's lineage up to the live lineage's end; ``gating`` once it stands there."""
    settings = settings or get_settings()
    rebuild = _active(settings, rebuild_id)
    if rebuild is None:
        return {"rebuild_id": rebuild_id, "skipped": True}
    from include.training.options import TrainerBusy

    try:
        progress = train_lineage(settings, rebuild, use_airflow=use_airflow, dag_id=dag_id, dag_run_id=dag_run_id,
                                 mode=mode, max_runs=max_runs)
    except TrainerBusy as exc:  # another process trains this lineage now (a second `rebuild run`): it goes on
        log.info("rebuild %d: %s", rebuild.id, exc)
        return {"rebuild_id": rebuild.id, "busy": str(exc)}
    if progress.caught_up:
        records.update(db.session_factory(settings.db_url), rebuild.id, state="gating",
                       message=f"{rebuild.lineage} has caught up with the live lineage: the gate decides")
    return {"rebuild_id": rebuild.id, **progress.as_dict()}


def decide_step(rebuild_id: int, settings: Settings | None = None, *, use_airflow: bool = False,
                dag_id: str | None = None, dag_run_id: str | None = None, mode: str | None = None) -> Decision:
    """Follow what the live generation got since (new files, a newer live version), then the gate."""
    settings = settings or get_settings()
    if _active(settings, rebuild_id) is not None:
        clients = KafkaClients(settings, use_airflow=use_airflow)
        fill_step(rebuild_id, settings, use_airflow=use_airflow, dag_run_id=dag_run_id, clients=clients)
        train_step(rebuild_id, settings, use_airflow=use_airflow, dag_id=dag_id, dag_run_id=dag_run_id, mode=mode)
    else:
        clients = None
    return decide(settings, rebuild_id, clients=clients)


def run_rebuild(settings: Settings | None = None, *, reason: str | None = None, actor: str = "cli",
                model_name: str | None = None, mode: str | None = None) -> dict[str, Any]:
    """The whole rebuild in this process (``python -m include rebuild run``): start or join, fill, train, decide.

    Safe to run again at any time (after a crash, beside the DAG): each step continues what exists.
    """
    settings = settings or get_settings()
    started = start_step(settings, reason=reason, actor=actor, model_name=model_name)
    if started is None:
        return {"rebuild": None, "message": f"no rebuild of {settings.topic} is requested or running "
                                            "(`python -m include rebuild run --reason ...` requests one)"}
    rebuild_id = started["id"]
    fill = fill_step(rebuild_id, settings)
    train = train_step(rebuild_id, settings, mode=mode)
    verdict = decide(settings, rebuild_id)
    info = records.get(db.session_factory(settings.db_url), rebuild_id)
    return {"rebuild": info.as_dict(), "fill": fill, "train": train, "decision": verdict.as_dict()}


def notify_step(rebuild_id: int, notifiers, *, context: dict[str, Any] | None = None,
                settings: Settings | None = None) -> dict[str, Any]:
    """Deliver the pending alerts of the live model (a rejected rebuild's alert is recorded for it) as one digest."""
    from include.lifecycle.alerts import deliver_pending
    from include.lifecycle.registry import Registry

    settings = settings or get_settings()
    registry = Registry(settings)
    info = records.get(registry.sessions, rebuild_id)
    lineage, _ = Generations(registry.sessions, settings.topic).lineage(info.model_name)
    names = {lineage, (info.gate or {}).get("champion_model") or lineage}
    delivered = {name: deliver_pending(registry, name, notifiers, context=context) for name in sorted(names)}
    return {"rebuild_id": rebuild_id, "state": info.state,
            "delivered": {name: d.alerts for name, d in delivered.items()}}
