"""Answers to streamed requests: the predictions topic's name and one JSON value per request.

Every request gets exactly one answer, keyed like the request: a scored one names the request (topic, partition,
offset), the model version that scored it, the probability of the positive label, the predicted label and the label
the request carried (``null`` when it had none); a refused one names the request and the reason (the value parser's
words, as ingest would give them). A whole poll batch is encoded at once from precomputed byte templates, since
``json.dumps`` per message would cost more than the model does. This module never touches Kafka or a model.
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np

from include.serving.requests import Requests

#: A probability at or above this predicts the positive label.
THRESHOLD = 0.5


def predictions_topic(requests_topic: str) -> str:
    """Where the answers to ``requests_topic`` go."""
    return f"{requests_topic}.predictions"


def _literal(value: str) -> bytes:
    """``value`` as a JSON string, safe inside a ``bytes % args`` template."""
    return json.dumps(value).encode().replace(b"%", b"%%")


def encode_answers(topic: str, model_name: str, version: int, partitions: Sequence[int], offsets: Sequence[int],
                   requests: Requests, probabilities: np.ndarray) -> list[bytes]:
    """One JSON answer per request, in request order.

    Args:
        topic: The requests topic.
        model_name: The model name.
        version: The version that scored the batch.
        partitions: Each request's partition.
        offsets: Each request's offset.
        requests: The batch decoded by :func:`include.serving.requests.decode_requests`.
        probabilities: The model's output for ``requests.x``.

    Returns:
        The answers' values (UTF-8 JSON), ``len(partitions)`` of them.
    """
    head = b'{"topic":' + _literal(topic) + b',"partition":%d,"offset":%d,"model":' + _literal(model_name)
    head += b',"version":%d,' % version
    scored = head + b'"probability":%.6f,"label":%d,"observed_label":%s}'
    refused = head + b'"error":%s}'
    answers: list[bytes] = [b""] * len(partitions)
    probs = probabilities.tolist()
    predicted = (probabilities >= THRESHOLD).tolist()
    observed = [b"null" if math.isnan(y) else b"%d" % y for y in requests.labels.tolist()]
    for j, i in enumerate(requests.good.tolist()):
        answers[i] = scored % (partitions[i], offsets[i], probs[j], predicted[j], observed[j])
    for i, reason in requests.errors:
        answers[i] = refused % (partitions[i], offsets[i], json.dumps(reason).encode())
    return answers
