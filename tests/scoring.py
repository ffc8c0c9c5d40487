"""What the streaming-scoring tests share: an environment, versions to score with, requests in, answers out."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from tests.faults.helpers import drone_rows
from tests.support import PROJECT, clients_for, process_env, read_topic, unique

MODEL = "default"


def scoring_env(state: Path, bootstrap: str, topic: str, **extra: object) -> dict[str, str]:
    """The project's variables for one test: its own state folder (database, models), topics and groups."""
    env = {"RETRAIN_STATE_DIR": str(state), "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "RETRAIN_TOPIC": topic,
           "RETRAIN_SCHEMA": "drone", "RETRAIN_CONSUMER_GROUP": unique("g"), "RETRAIN_STREAM_TIMEOUT_S": "3"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def settings_of(env: Mapping[str, str]):
    from include.settings import settings_from_env

    return settings_from_env(dict(env))


def register(settings, seed: int):
    """A fresh Keras model (``seed``) registered as the next version of :data:`MODEL` (the first is champion)."""
    from include.lifecycle.registry import Registry
    from include.lifecycle.versions import VersionSource, register_version
    from include.schema import load_schema
    from include.training.model import build_model

    schema = load_schema(settings.schema_name)
    source = VersionSource(checkpoint_id=f"test-seed-{seed}", run_id=None, schema_id=schema.id, topic=settings.topic,
                           offsets={}, records_total=0)
    return register_version(Registry(settings), MODEL, build_model(schema, seed=seed), source)


def promote(settings, version: int) -> None:
    from include.lifecycle.promotion import promote as switch
    from include.lifecycle.registry import Registry

    switch(Registry(settings), MODEL, version, actor="test", reason="version switch mid-stream")


def mixed_requests(n: int, start: int = 0) -> list[bytes]:
    """``n`` requests: most valid with their label, every 3rd without it, 1 in 10 refused (unknown shop type or
    not a row at all)."""
    out = []
    for i, row in enumerate(drone_rows(n, start=start), start=start):
        fields = row.split(",")
        if i % 20 == 7:
            fields[2] = "bakery"
        elif i % 20 == 17:
            fields = ["not", "a", "row"]
        elif i % 3 == 1:
            fields = fields[:-1]
        out.append(",".join(fields).encode())
    return out


def produce_requests(bootstrap: str, topic: str, values: Sequence[bytes], *, key_prefix: str = "k") -> None:
    """Produce ``values`` to ``topic`` (keys ``<prefix><i>``), all delivered."""
    producer = clients_for(bootstrap).producer()
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value, f"{key_prefix}{i}".encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


@dataclass
class Answers:
    """The predictions topic as a read_committed reader sees it."""

    by_request: dict[tuple[int, int], list[dict]]
    keys: dict[tuple[int, int], bytes | None]
    placed: dict[tuple[int, int], int]  # the partition each answer is in
    total: int

    @property
    def duplicates(self) -> int:
        return sum(len(v) - 1 for v in self.by_request.values())

    def versions(self) -> Counter:
        return Counter(a["version"] for v in self.by_request.values() for a in v)


def read_answers(bootstrap: str, topic: str, *, committed_only: bool = True) -> Answers:
    by_request: dict[tuple[int, int], list[dict]] = {}
    keys, placed = {}, {}
    messages = read_topic(bootstrap, topic, committed_only=committed_only)
    for msg in messages:
        answer = json.loads(msg.value())
        where = (answer["partition"], answer["offset"])
        by_request.setdefault(where, []).append(answer)
        keys[where], placed[where] = msg.key(), msg.partition()
    return Answers(by_request, keys, placed, len(messages))


def request_offsets(bootstrap: str, topic: str) -> dict[tuple[int, int], tuple[bytes | None, bytes]]:
    """Every request in ``topic``: ``(partition, offset) -> (key, value)``."""
    return {(m.partition(), m.offset()): (m.key(), m.value()) for m in read_topic(bootstrap, topic)}


def score_cli(env: Mapping[str, str], *args: str, fault: str | None = None) -> subprocess.Popen:
    """``python -m include score ARGS`` as a real process."""
    return subprocess.Popen([sys.executable, "-m", "include", "score", *args], env=process_env(env, fault),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT)
