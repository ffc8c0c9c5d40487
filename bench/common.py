"""What the benchmark scripts share: the author's file and its rows, filling and deleting topics, a one-line
description of the machine, and how a report is printed and written."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from include.demo.reference import BLOG_FILE

PROJECT = Path(__file__).resolve().parents[1]
__all__ = ["BLOG_FILE", "PROJECT", "blog_rows", "clients_for", "delete_topics", "machine", "produce", "publish"]


def blog_rows(path: Path) -> list[bytes]:
    """The file's valid rows (14 fields), in order, without the byte-order mark and line endings."""
    rows = path.read_bytes().lstrip(b"\xef\xbb\xbf").split(b"\r\n")
    return [r for r in rows if r.count(b",") == 13]


def produce(bootstrap: str, topic: str, rows: list[bytes], count: int, **config: object) -> float:
    """Produce ``count`` records (``rows`` repeated) with a plain producer (``config`` added to its settings);
    returns records/s. Raises if any record is not delivered."""
    clients = clients_for(bootstrap)
    clients.ensure_topic(topic)
    # Filling a topic for a benchmark, not ingesting: no idempotence needed.
    producer = clients.producer(**{"enable.idempotence": False, "linger.ms": 20, **config})
    started = time.perf_counter()
    n = len(rows)
    for i in range(count):
        while True:
            try:
                producer.produce(topic, rows[i % n])
                break
            except BufferError:
                producer.poll(0.05)
        if i & 0x3FF == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError(f"{topic}: not every record was delivered")
    return count / (time.perf_counter() - started)


def clients_for(bootstrap: str):
    """The project's Kafka client factory for a plain broker address."""
    from include.kafka.clients import KafkaClients
    from include.settings import settings_from_env

    return KafkaClients(settings_from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap}))


def delete_topics(clients, topics: list[str]) -> None:
    """Delete those of ``topics`` that exist (through ``clients``, a KafkaClients); report failures, go on."""
    admin = clients.admin()
    existing = set(admin.list_topics(timeout=30).topics)
    doomed = [t for t in topics if t in existing]
    if not doomed:
        return
    for topic, future in admin.delete_topics(doomed, operation_timeout=60).items():
        try:
            future.result(60)
        except Exception as exc:  # noqa: BLE001 - best effort clean-up
            print(f"could not delete topic {topic}: {exc}")


def machine() -> str:
    """CPU count and model (from /proc/cpuinfo where there is one) and the Python version."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU ({model}), Python {platform.python_version()}"


def publish(text: str, out: Path) -> None:
    """Print a markdown report and write it to ``out`` (its folder created if missing)."""
    print()
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")
