"""Deleting the topics of retired generations (beyond ``RETRAIN_KEEP_GENERATIONS``, or rejected and superseded).

:func:`include.lifecycle.generations.mark_retired` decides, inside the switch's transaction; this deletes the data,
dead-letter and control topics of every retired generation that still has them, after the commit. Idempotent: a
crash between the two leaves topics that the next call deletes. The live generation's topics are never touched, nor
the requests topic. The rows (ledger, versions, history) stay.
"""

from __future__ import annotations

import logging

from include.history import db
from include.ingest.markers import control_topic
from include.kafka.clients import KafkaClients
from include.lifecycle.generations import Generations, generation_settings
from include.settings import Settings

log = logging.getLogger(__name__)


def delete_retired_topics(settings: Settings, *, clients: KafkaClients | None = None,
                          use_airflow: bool = False) -> list[str]:
    """Delete the topics of the base topic's retired generations; the topics deleted."""
    generations = Generations(db.session_factory(settings.db_url), settings.topic)
    live = generation_settings(settings, generations.live())
    keep = {live.topic, live.dlq_topic, control_topic(live.topic), settings.requests_topic,
            f"{settings.requests_topic}.predictions"}
    doomed = []
    for info in generations.all():
        if info.status == "retired":
            gen = generation_settings(settings, info.generation)
            doomed += [t for t in (gen.topic, gen.dlq_topic, control_topic(gen.topic)) if t not in keep]
    if not doomed:
        return []
    clients = clients or KafkaClients(settings, use_airflow=use_airflow)
    existing = [t for t in doomed if clients.topic_exists(t)]
    if existing:
        admin = clients.admin()
        for topic, future in admin.delete_topics(existing, operation_timeout=30).items():
            try:
                future.result(timeout=60)
                log.info("deleted topic %s of a retired generation", topic)
            except Exception as exc:  # noqa: BLE001 - one that cannot be deleted now is deleted next time
                log.warning("could not delete topic %s of a retired generation: %s", topic, exc)
    return existing
