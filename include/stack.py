"""Health checks of the stack (Kafka reachable, TensorFlow usable), used by the ``stack_check`` DAG."""

from __future__ import annotations

from include.kafka.clients import KafkaClients
from include.settings import get_settings


def check_kafka(timeout: float = 15.0) -> dict:
    """Ask the broker for metadata through the configured connection; raise if it does not answer."""
    settings = get_settings()
    metadata = KafkaClients(settings, use_airflow=True).admin().list_topics(timeout=timeout)
    return {"brokers": len(metadata.brokers), "topics": len(metadata.topics)}


def check_tensorflow() -> dict:
    """Import TensorFlow and tensorflow-io and take one Keras gradient step."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_io as tfio

    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    loss = model.train_on_batch(np.ones((8, 4), "float32"), np.ones((8,), "float32"))
    return {"tensorflow": tf.__version__, "tensorflow_io": tfio.__version__, "keras": keras.__version__, "loss": float(loss)}
