"""Kafka client configuration and construction, in one place.

Inside Airflow the configuration is the ``kafka_default`` Connection's extra JSON, read through the Kafka
provider's hook and passed to confluent-kafka untouched (so SASL/SSL settings never appear in code). Outside
Airflow (CLIs, tests, benchmarks) it is ``KAFKA_BOOTSTRAP_SERVERS`` plus ``KAFKA_CONFIG_JSON``. Role-specific
settings (transactions, consumer groups) are added on top here and nowhere else.

Never log a configuration without :func:`redact`.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from include.settings import Settings

log = logging.getLogger(__name__)

_SECRET_MARKERS = ("password", "secret", "token", "key.pem", "private", "sasl.jaas")


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` safe to log: secret-looking values are replaced by ``***``."""
    return {k: ("***" if any(m in k.lower() for m in _SECRET_MARKERS) else v) for k, v in config.items()}


def _airflow_connection_config(conn_id: str) -> dict[str, Any] | None:
    """The provider hook's configuration for ``conn_id``, or None when not running with Airflow."""
    try:
        from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook
    except ImportError:
        return None
    try:
        # _build_config is the provider's own resolution (callbacks, managed-Kafka OAuth); reuse it.
        return dict(KafkaBaseHook(kafka_config_id=conn_id)._build_config())
    except Exception as exc:  # noqa: BLE001 - any lookup failure means: no usable connection here
        if type(exc).__name__ in ("AirflowNotFoundException", "ConnectionNotFound") or "isn't defined" in str(exc):
            return None
        raise


def base_config(settings: Settings, *, use_airflow: bool = False) -> dict[str, Any]:
    """The common client configuration.

    Args:
        settings: project settings (bootstrap servers and extra config for the non-Airflow path).
        use_airflow: read the Airflow Connection ``settings.kafka_conn_id`` first (inside tasks).
    """
    if use_airflow:
        config = _airflow_connection_config(settings.kafka_conn_id)
        if config is not None:
            return config
        log.warning(
            "Airflow connection %r is not defined; using KAFKA_BOOTSTRAP_SERVERS=%s",
            settings.kafka_conn_id,
            settings.kafka_bootstrap_servers,
        )
    return {"bootstrap.servers": settings.kafka_bootstrap_servers, **dict(settings.kafka_extra_config)}


def producer_config(base: Mapping[str, Any], *, transactional_id: str | None = None) -> dict[str, Any]:
    """Idempotent, acks=all producer settings; transactional when ``transactional_id`` is given."""
    config = {
        **base,
        "acks": "all",
        "enable.idempotence": True,
        # Bigger batches halve the broker's CPU per message (measured by bench/bench_ingest.py on a 2-core machine
        # that runs the broker too); 50 ms of wait matters to no caller here, and flush() does not wait for it.
        "linger.ms": 50,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    if transactional_id:
        config["transactional.id"] = transactional_id
        # One transaction carries a whole file, so it must outlive the longest file: a 1 GB file (~24 M rows)
        # takes about two minutes at 200,000 rows/s, and past this timeout the coordinator aborts the transaction
        # and fences the producer, every retry at the same point. 15 min is the broker's default ceiling
        # (transaction.max.timeout.ms). A crashed attempt is still aborted at once by its retry (same id).
        config["transaction.timeout.ms"] = 900_000
    return config


def consumer_config(base: Mapping[str, Any], *, group_id: str) -> dict[str, Any]:
    """Explicit-offset consumer: auto-commit off, read_committed, no silent offset reset."""
    return {
        **base,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        # An offset that fell out of the log must be an error, never a silent jump: see reader.py.
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 10_485_760,
        "queued.max.messages.kbytes": 262_144,
    }


def admin_client(base: Mapping[str, Any]):
    from confluent_kafka.admin import AdminClient

    return AdminClient(dict(base))


def ensure_topic(
    base: Mapping[str, Any], topic: str, *, partitions: int = 1, retention_ms: int = -1, timeout: float = 30.0
) -> bool:
    """Create ``topic`` if it is missing. Returns True when this call created it."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    admin = admin_client(base)
    if topic in admin.list_topics(timeout=timeout).topics:
        return False
    new = NewTopic(topic, num_partitions=partitions, replication_factor=-1, config={"retention.ms": str(retention_ms)})
    try:
        admin.create_topics([new], operation_timeout=timeout)[topic].result(timeout)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise
    log.info("created topic %s (%d partitions, retention.ms=%d)", topic, partitions, retention_ms)
    return True
