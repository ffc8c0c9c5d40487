"""Stopping and starting the broker (the project's script) keeps topics and committed offsets."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.support import Broker, create_topic, unique

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker(tmp_path):
    """A broker of this test's own (separate port and data), so stopping it disturbs no other test."""
    broker = Broker(state_dir=tmp_path / "kafka", port=29092)
    broker.start()
    yield broker
    broker.stop()


def test_restart_keeps_topics_and_committed_offsets(own_broker):
    base = {"bootstrap.servers": own_broker.bootstrap}
    topic, group = unique("restart"), unique("g")
    create_topic(own_broker.bootstrap, topic)
    producer = Producer({**base, "acks": "all"})
    for i in range(500):
        producer.produce(topic, value=str(i).encode())
    assert producer.flush(30) == 0
    consumer = Consumer({**base, "group.id": group, "enable.auto.commit": False})
    # A just-started broker may still be electing the group coordinator (offsets topic): wait for it.
    deadline = time.monotonic() + 60
    while True:
        try:
            consumer.commit(offsets=[TopicPartition(topic, 0, 321)], asynchronous=False)
            break
        except KafkaException as exc:
            if not exc.args[0].retriable() and exc.args[0].code() != KafkaError.NOT_COORDINATOR or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    consumer.close()

    own_broker.stop()
    assert not own_broker.status()
    own_broker.start()  # second start of the same state folder: no re-format
    assert own_broker.status()

    assert topic in AdminClient(base).list_topics(timeout=30).topics
    consumer = Consumer({**base, "group.id": group, "enable.auto.commit": False})
    try:
        assert consumer.committed([TopicPartition(topic, 0)], timeout=30)[0].offset == 321
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        assert (low, high) == (0, 500)
    finally:
        consumer.close()
