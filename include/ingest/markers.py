"""Commit markers: the record, inside each file's Kafka transaction, that the file was committed.

Each ingest transaction ends with a marker (key = the file's SHA-256, value = rows, bad rows, offsets) in the small
control topic ``<topic>.ingest-ledger``. A retry that finds the marker knows the earlier attempt committed, even if
the process died before the ledger row was written. This module names the control topic and the transactional ids
and finds markers; it never produces (the transaction does, see :mod:`include.ingest.transaction`).
"""

from __future__ import annotations

import json
import time

from include.ingest.errors import IngestError
from include.kafka.clients import KafkaClients

MARKER_WAIT_S = 120.0
MARKER_GROUP = "retrain-ingest-marker-reader"


class MarkerLookupError(IngestError):
    """The control topic could not be read to a stable end in time; nothing can be concluded yet."""


def control_topic(topic: str) -> str:
    return f"{topic}.ingest-ledger"


def transactional_id(topic: str, sha: str) -> str:
    """The file's transactional id: the same for every attempt at the same content, so a retry fences the last."""
    return f"retrain-ingest-{topic}-{sha[:40]}"


def find_marker(clients: KafkaClients, topic: str, sha: str, timeout: float = MARKER_WAIT_S) -> dict | None:
    """The committed marker of file ``sha`` in the control topic, or None.

    Reads read_committed up to the last stable offset, and insists that it equals the high watermark: a
    marker behind another file's still-open transaction would be invisible, and "not found" must mean
    "not committed".
    """
    from confluent_kafka import KafkaError, TopicPartition

    ctl = control_topic(topic)
    consumer = clients.consumer(MARKER_GROUP, role="control")
    deadline = time.monotonic() + timeout
    try:
        partitions = sorted(consumer.list_topics(ctl, timeout=30).topics[ctl].partitions)
        while True:
            found = None
            consumer.assign([TopicPartition(ctl, p, 0) for p in partitions])
            pending = set(partitions)
            while pending:
                msg = consumer.poll(1.0)
                if msg is None:
                    if time.monotonic() > deadline:
                        raise MarkerLookupError(f"timed out reading the ingest control topic {ctl}")
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                        continue
                    raise MarkerLookupError(f"reading {ctl}: {msg.error()}")
                if msg.key() == sha.encode():
                    found = json.loads(msg.value())
            if found is not None or _stable(consumer, ctl, partitions):
                return found
            if time.monotonic() > deadline:
                raise MarkerLookupError(f"another ingest transaction on {ctl} stayed open for {timeout:.0f}s; retry later")
            time.sleep(0.5)
    finally:
        consumer.close()


def _stable(consumer, ctl: str, partitions: list[int]) -> bool:
    """Whether the read_committed position of every partition reached its high watermark (no open transaction)."""
    from confluent_kafka import TopicPartition

    for p in partitions:
        position = consumer.position([TopicPartition(ctl, p)])[0].offset
        _, high = consumer.get_watermark_offsets(TopicPartition(ctl, p), timeout=30, cached=False)
        if 0 <= position < high:
            return False
    return True
