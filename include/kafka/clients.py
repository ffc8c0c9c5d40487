"""The one place where Kafka clients are configured and constructed.

:class:`KafkaClients` resolves the client configuration once and builds every producer, consumer, admin client and
tensorflow-io dataset of the project from it, adding the settings of the client's role (transactions, explicit
offsets, read_committed...) on top. Nowhere else constructs a ``Producer``, ``Consumer`` or ``AdminClient``.

Where the configuration comes from:

- inside Airflow tasks (``use_airflow=True``): the Airflow Connection ``KAFKA_CONN_ID`` (``kafka_default``), its
  extra JSON passed to confluent-kafka untouched, as the Kafka provider's hooks do, so SASL/SSL settings never
  appear in code. The connection is read through Airflow's public ``BaseHook.get_connection``; when it is not
  defined (``AirflowNotFoundException``) the environment is used and a warning says so.
- elsewhere (command line, tests, benchmarks): ``KAFKA_BOOTSTRAP_SERVERS`` plus ``KAFKA_CONFIG_JSON``.

Never log a configuration without :func:`redact`.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from include.settings import Settings

log = logging.getLogger(__name__)

_SECRET_MARKERS = ("password", "secret", "token", "key.pem", "private", "sasl.jaas")

# Role settings added on top of the common configuration, per kind of consumer.
_CONSUMER_ROLES: dict[str, dict[str, Any]] = {
    # The trainer's and the baseline's reader: explicit offsets, auto-commit off, read_committed, no silent reset.
    "reader": {
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        # An offset that fell out of the log must be an error, never a silent jump: see reader.py.
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 100,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 10_485_760,
        "queued.max.messages.kbytes": 262_144,
    },
    # The streaming scorer's consumer (consume-transform-produce): explicit assignment at the group's committed
    # offsets, which only its transactions move (send_offsets_to_transaction), so never auto-commit or store.
    "transform": {
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 50,
        "fetch.max.bytes": 52_428_800,
        "queued.max.messages.kbytes": 262_144,
    },
    # Reads or commits a group's offsets without consuming (finishing a crashed run's commit, tfio's position).
    "offsets": {"enable.auto.commit": False},
    # Reads a small control topic from its start to its stable end (ingest's commit markers).
    "control": {
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
    },
    # Looks at watermarks and committed offsets for the UI; quiet, never creates a topic.
    "monitor": {
        "enable.auto.commit": False,
        "allow.auto.create.topics": False,
        # A broker that is away is reported in the answer; librdkafka's per-retry FAIL lines would only flood the
        # API server's log on every page load.
        "log_level": 2,
    },
}


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` safe to log: secret-looking values are replaced by ``***``."""
    return {k: ("***" if any(m in k.lower() for m in _SECRET_MARKERS) else v) for k, v in config.items()}


class KafkaConfigError(ValueError):
    """The Kafka client configuration cannot be used (e.g. an Airflow connection without bootstrap servers)."""


def resolve_config(settings: Settings, *, use_airflow: bool = False) -> dict[str, Any]:
    """The common client configuration (see the module docstring for where it comes from)."""
    if use_airflow:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            connection = BaseHook.get_connection(settings.kafka_conn_id)
        except AirflowNotFoundException:
            log.warning("Airflow connection %r is not defined; using KAFKA_BOOTSTRAP_SERVERS=%s",
                        settings.kafka_conn_id, settings.kafka_bootstrap_servers)
        else:
            config = dict(connection.extra_dejson)
            if not config.get("bootstrap.servers"):
                raise KafkaConfigError(f"Airflow connection {settings.kafka_conn_id!r} has no 'bootstrap.servers' in "
                                       "its extra JSON (the librdkafka configuration)")
            return config
    return {"bootstrap.servers": settings.kafka_bootstrap_servers, **dict(settings.kafka_extra_config)}


class KafkaClients:
    """Every Kafka client of the project, from one resolved configuration.

    Args:
        settings: Project settings (connection id, bootstrap servers, extra config).
        use_airflow: Read the Airflow Connection first (inside tasks).
        config: Use this configuration as is instead of resolving one (tests, benchmarks with their own broker).
    """

    def __init__(self, settings: Settings, *, use_airflow: bool = False, config: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.config: dict[str, Any] = dict(config) if config is not None else resolve_config(settings, use_airflow=use_airflow)

    @property
    def bootstrap_servers(self) -> str:
        return str(self.config["bootstrap.servers"])

    def describe(self) -> dict[str, Any]:
        """The configuration, safe to log."""
        return redact(self.config)

    # -- producers --------------------------------------------------------------------------------------------

    def producer_config(self, *, transactional_id: str | None = None) -> dict[str, Any]:
        """Idempotent, acks=all producer settings; transactional when ``transactional_id`` is given."""
        config = {
            **self.config,
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
            # takes about two minutes at 200,000 rows/s, and past this timeout the coordinator aborts the
            # transaction and fences the producer, every retry at the same point. 15 min is the broker's default
            # ceiling (transaction.max.timeout.ms). A crashed attempt is still aborted at once by its retry.
            config["transaction.timeout.ms"] = 900_000
        return config

    def producer(self, *, transactional_id: str | None = None, on_delivery=None, **overrides: Any):
        """A confluent-kafka ``Producer`` (see :meth:`producer_config`)."""
        from confluent_kafka import Producer

        config = {**self.producer_config(transactional_id=transactional_id), **overrides}
        if on_delivery is not None:
            config["on_delivery"] = on_delivery
        return Producer(config)

    def transform_producer(self, transactional_id: str, **overrides: Any):
        """The transactional producer of a consume-transform-produce loop (the streaming scorer).

        One transaction carries one poll batch (seconds, not minutes), so the transaction timeout is short: a
        scorer that dies and is not restarted holds back read_committed readers of its output for at most a
        minute; a restarted one (same ``transactional_id``) aborts the open transaction at once.
        """
        config = {"transaction.timeout.ms": 60_000, "linger.ms": 5, **overrides}
        return self.producer(transactional_id=transactional_id, **config)

    # -- consumers --------------------------------------------------------------------------------------------

    def consumer_config(self, group_id: str, *, role: str = "reader", **overrides: Any) -> dict[str, Any]:
        if role not in _CONSUMER_ROLES:
            raise ValueError(f"unknown consumer role {role!r}; one of {sorted(_CONSUMER_ROLES)}")
        return {**self.config, "group.id": group_id, **_CONSUMER_ROLES[role], **overrides}

    def consumer(self, group_id: str, *, role: str = "reader", **overrides: Any):
        """A confluent-kafka ``Consumer`` in ``group_id`` with the settings of ``role`` (see ``_CONSUMER_ROLES``)."""
        from confluent_kafka import Consumer

        return Consumer(self.consumer_config(group_id, role=role, **overrides))

    def tfio_batch_dataset(self, topic: str, group_id: str, *, batch_messages: int, stream_timeout_s: float):
        """tensorflow-io's ``KafkaBatchIODataset`` on ``topic`` in ``group_id``: the seed's reader.

        tfio builds its own librdkafka consumer from a list of ``key=value`` strings; the common configuration's
        plain values are passed through, with the seed's session settings and read_committed on top.
        """
        import tensorflow_io as tfio

        extra = [f"{k}={v}" for k, v in self.config.items()
                 if k != "bootstrap.servers" and isinstance(v, (str, int, float, bool))]
        return tfio.experimental.streaming.KafkaBatchIODataset(
            topics=[topic], group_id=group_id, servers=self.bootstrap_servers,
            stream_timeout=int(stream_timeout_s * 1000),
            configuration=["session.timeout.ms=7000", "max.poll.interval.ms=8000", "auto.offset.reset=earliest",
                           "isolation.level=read_committed", f"batch.num.messages={batch_messages}", *extra],
        )

    # -- administration ---------------------------------------------------------------------------------------

    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient(dict(self.config))

    def topic_exists(self, topic: str, timeout: float = 30.0) -> bool:
        return topic in self.admin().list_topics(timeout=timeout).topics

    def topic_id(self, topic: str, timeout: float = 15.0) -> str | None:
        """The topic's id (it changes when a topic is deleted and recreated); None when the broker cannot tell."""
        from confluent_kafka import KafkaException, TopicCollection

        # Keep the client referenced until the answer is in: a dropped AdminClient is destroyed at once and its
        # pending request fails with _DESTROY, which once silently disabled the recreated-topic check.
        admin = self.admin()
        try:
            description = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout)[topic].result(timeout)
        except KafkaException as exc:
            log.debug("could not describe topic %s: %s", topic, exc)
            return None
        return str(description.topic_id) if description.topic_id is not None else None

    def ensure_topic(self, topic: str, *, partitions: int = 1, retention_ms: int = -1, timeout: float = 30.0) -> bool:
        """Create ``topic`` if it is missing. Returns True when this call created it."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        if topic in admin.list_topics(timeout=timeout).topics:
            return False
        new = NewTopic(topic, num_partitions=partitions, replication_factor=-1,
                       config={"retention.ms": str(retention_ms)})
        try:
            admin.create_topics([new], operation_timeout=timeout)[topic].result(timeout)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return False
            raise
        log.info("created topic %s (%d partitions, retention.ms=%d)", topic, partitions, retention_ms)
        return True
