"""The real broker works for what the project needs: acks=all produce, group consume, manual commit."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition


from tests.support import create_topic

pytestmark = pytest.mark.integration

N = 10_000


def test_produce_consume_commit_and_read_committed_offsets(kafka_bootstrap, topic):
    base = {"bootstrap.servers": kafka_bootstrap}
    assert create_topic(kafka_bootstrap, topic) is True
    assert create_topic(kafka_bootstrap, topic) is False  # idempotent

    delivered, errors = [], []

    def on_delivery(err, msg):
        (errors if err else delivered).append(err or msg.offset())

    producer = Producer({**base, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    for i in range(N):
        while True:
            try:
                producer.produce(topic, key=str(i % 100).encode(), value=f"row-{i}".encode(), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []
    assert sorted(delivered) == list(range(N))

    group = f"g-{topic}"
    consumer = Consumer({**base, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    seen = []
    try:
        consumer.subscribe([topic])
        idle = 0
        while len(seen) < N and idle < 20:
            batch = consumer.consume(num_messages=1000, timeout=1.0)
            idle = 0 if batch else idle + 1
            for msg in batch:
                assert msg.error() is None, msg.error()
                seen.append(msg.value().decode())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert seen == [f"row-{i}" for i in range(N)]

    # A fresh consumer of the same group reads the committed offsets back from the broker.
    probe = Consumer({**base, "group.id": group, "enable.auto.commit": False})
    try:
        committed = probe.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        probe.close()
    assert committed[0].offset == N
