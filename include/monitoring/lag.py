"""Consumer lag and dead letters, from the broker, for the UI page. Never blocks longer than its ``timeout``."""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

from include.kafka.clients import KafkaClients, KafkaConfigError
from include.settings import Settings

log = logging.getLogger(__name__)

KAFKA_TIMEOUT_S = 3.0


def _clients(settings: Settings, config: Mapping[str, Any] | None) -> KafkaClients:
    """The given configuration, else the Airflow connection, else the environment: the page must show something."""
    if config is not None:
        return KafkaClients(settings, config=config)
    try:
        return KafkaClients(settings, use_airflow=True)
    except KafkaConfigError as exc:
        log.warning("%s; using KAFKA_BOOTSTRAP_SERVERS", exc)
        return KafkaClients(settings)


class _Budget:
    """What is left of an overall time budget, for each broker call in turn."""

    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + seconds

    def left(self) -> float:
        return max(0.05, self.deadline - time.monotonic())

    def elapsed_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 1)


def kafka_status(settings: Settings, *, timeout: float = KAFKA_TIMEOUT_S,
                 config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Consumer lag per partition now (end offset minus the group's committed offset) and the dead-letter count.

    Lag counts offsets, transaction markers included: a run that reads a partition to its end commits the offset
    past the closing marker (lag 0), while a run stopped by a limit leaves the marker after its last record
    uncounted until the next run (lag 1). Never raises for an unreachable broker: returns
    ``available: False`` with the error, within about ``timeout`` seconds.

    Args:
        settings: topic, dead-letter topic and consumer group.
        timeout: overall budget in seconds for all broker calls.
        config: client configuration (default: the Airflow connection, else ``KAFKA_BOOTSTRAP_SERVERS``).
    """
    from confluent_kafka import KafkaException

    budget = _Budget(timeout)
    result: dict[str, Any] = {
        "available": False, "error": None, "topic": settings.topic, "consumer_group": settings.consumer_group,
        "partitions": [], "total_lag": None, "dlq_topic": settings.dlq_topic, "dead_letters": None,
    }
    consumer = None
    try:
        clients = _clients(settings, config)
        # The budget is for broker calls: resolving the configuration is not one, and a process's first Airflow
        # connection lookup (importing the SDK) alone can take longer than the whole budget.
        budget = _Budget(timeout)
        consumer = clients.consumer(
            settings.consumer_group, role="monitor", logger=logging.getLogger("include.monitoring.kafka"),
            **{"socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000))})
        metadata = consumer.list_topics(timeout=budget.left())
        topic_meta = metadata.topics.get(settings.topic)
        if topic_meta is None or topic_meta.error is not None:
            result["error"] = f"topic {settings.topic} not found"
        else:
            result["partitions"] = _partition_lags(consumer, settings.topic, sorted(topic_meta.partitions), budget)
            result["total_lag"] = sum(p["lag"] for p in result["partitions"])
        dlq_meta = metadata.topics.get(settings.dlq_topic)
        # No dead-letter topic yet: nothing was ever sent there.
        result["dead_letters"] = 0 if dlq_meta is None or dlq_meta.error is not None else _message_count(
            consumer, settings.dlq_topic, sorted(dlq_meta.partitions), budget)
        result["available"] = True
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        result["error"] = error.str() if hasattr(error, "str") else str(exc)
    except Exception as exc:  # noqa: BLE001 - any client failure means: unavailable now
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if consumer is not None:
            try:
                consumer.close()
            except Exception:  # noqa: BLE001 - closing a client of an absent broker may fail too
                pass
    result["elapsed_ms"] = budget.elapsed_ms()
    return result


def _partition_lags(consumer, topic: str, partitions: list[int], budget: _Budget) -> list[dict[str, Any]]:
    from confluent_kafka import TopicPartition

    tps = [TopicPartition(topic, p) for p in partitions]
    committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=budget.left())}
    out = []
    for tp in tps:
        low, high = consumer.get_watermark_offsets(tp, timeout=budget.left(), cached=False)
        done = committed.get(tp.partition, -1)
        out.append({"partition": tp.partition, "start": low, "end": high, "committed": done if done >= 0 else None,
                    "lag": high - (done if done >= 0 else low)})
    return out


def _message_count(consumer, topic: str, partitions: list[int], budget: _Budget) -> int:
    from confluent_kafka import TopicPartition

    count = 0
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=budget.left(), cached=False)
        count += high - low
    return count
