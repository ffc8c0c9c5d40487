"""The trainer's dead letters: messages that cannot be decoded, sent to the dead-letter topic with the reason.

Owns: the dead-letter message format (JSON with the source topic, partition, offset, reason and the first 1,000
characters of the value; key ``<topic>:<partition>:<offset>``; headers ``stage=train`` and ``reason``) and the
producer that sends it, made through :class:`include.kafka.clients.KafkaClients` the first time it is needed.

Never decides what is poison (the decoder does) and never lets the trainer's offsets move past a message that was
not delivered: :meth:`DeadLetters.flush` raises instead, and the trainer flushes before every checkpoint.
"""

from __future__ import annotations

import json
from typing import Any

from include.kafka.clients import KafkaClients
from include.kafka.records import Message


class DeadLetters:
    """Poison messages to the dead-letter topic, flushed before the offsets move past them.

    Args:
        clients: The project's Kafka client factory.
        topic: The dead-letter topic (created on the first message if missing).
        source_topic: The topic the messages were read from.

    Attributes:
        count: Messages sent so far.
        errors: Delivery errors reported by the producer so far.
    """

    def __init__(self, clients: KafkaClients, topic: str, source_topic: str) -> None:
        self.clients, self.topic, self.source_topic = clients, topic, source_topic
        self._producer: Any = None
        self.count = 0
        self.errors: list[str] = []

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def send(self, message: Message, reason: str) -> None:
        """Queue ``message`` for the dead-letter topic with ``reason`` (delivery is checked by :meth:`flush`)."""
        if self._producer is None:
            self.clients.ensure_topic(self.topic)
            self._producer = self.clients.producer(on_delivery=self._delivered)
        value = json.dumps(
            {"topic": self.source_topic, "partition": message.partition, "offset": message.offset, "reason": reason,
             "value": (message.value or b"")[:1000].decode("utf-8", "replace")}
        ).encode()
        self._producer.produce(self.topic, value, f"{self.source_topic}:{message.partition}:{message.offset}".encode(),
                               headers=[("stage", b"train"), ("reason", reason.encode()[:500])])
        self._producer.poll(0)
        self.count += 1

    def flush(self) -> None:
        """Wait until every message sent is delivered.

        Raises:
            RuntimeError: A message was not delivered: the offsets must not move past it.
        """
        if self._producer is not None and (self._producer.flush(60) != 0 or self.errors):
            raise RuntimeError(f"dead-letter messages were not delivered ({self.errors[:3]}); not moving offsets past them")
