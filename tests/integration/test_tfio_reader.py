"""tensorflow-io's KafkaBatchIODataset (the seed's reader) works against the project's Kafka 3.9 broker.

tensorflow-io 0.37.1 bundles librdkafka 1.5.0, which sends ListOffsets v0 when it resets an offset
(``auto.offset.reset=earliest`` with a new group); Kafka 4.0 removed that version, 3.9 still has it.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Producer


from tests.support import create_topic

pytestmark = pytest.mark.integration

N = 1_050


def test_kafka_batch_io_dataset_reads_every_message_in_mini_batches(kafka_bootstrap, topic):
    create_topic(kafka_bootstrap, topic)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for i in range(N):
        producer.produce(topic, key=b"k", value=f"{i % 2},{i}".encode())
    assert producer.flush(30) == 0

    import tensorflow_io as tfio

    dataset = tfio.experimental.streaming.KafkaBatchIODataset(
        topics=[topic],
        group_id=f"g-{topic}",
        servers=kafka_bootstrap,
        stream_timeout=4000,
        configuration=[
            "session.timeout.ms=7000",
            "max.poll.interval.ms=8000",
            "auto.offset.reset=earliest",
            "batch.num.messages=100",
        ],
    )
    values, sizes = [], []
    for mini_batch in dataset:
        size = 0
        for message, _key in mini_batch:
            values.append(int(message.numpy().decode().split(",")[1]))
            size += 1
        sizes.append(size)
    assert values == list(range(N))
    assert len(sizes) > 1, "expected several mini-batches"
    assert max(sizes) <= 100
