"""Benchmark: the streaming scorer end to end, exactly once, from the real broker.

What the issue asks: a requests topic scored into ``<requests topic>.predictions`` in Kafka transactions (answers
and consumed offsets committed together) at >= 20,000 records/s on this 2-core machine. This script measures and
PRINTS the figure (and writes ``bench/results/scoring.md``); it never asserts on timing.

In one run: ``--requests`` drone-schema requests (every 3rd without its label, 1 % refused) are produced to a fresh
requests topic with a plain producer; a model is registered in a temporary state folder; then
:func:`include.serving.stream.score_requests` (what ``python -m include score`` runs) scores the topic bounded,
once per ``--batch-messages`` value, each time as ``python -m include score`` in a fresh process on a fresh scorer
group (so each run scores every request). Its summary's records/s cover the whole run: fencing (``init_transactions``), offsets, model load, reading, decoding, scoring,
encoding, producing and committing. Each run's predictions topic is read back read_committed and must hold exactly
one answer per request; the process's wall time (interpreter start and imports too) is shown beside.
``--profile`` then prints the hottest functions of one more run, in this process.

Run it with ``scripts/bench.sh scoring`` (starts the broker) or ``.venv/bin/python bench/bench_scoring.py --help``.
Topics are deleted at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from bench.common import clients_for, delete_topics, machine as describe_machine, produce, publish  # noqa: E402

TARGET_RPS = 20_000
TYPES = ("grocery", "pharmacy", "restaurant", "electronics", "florist")


def requests(n: int) -> list[bytes]:
    """``n`` distinct drone-schema requests: every 3rd without its label, 1 in 100 with an unknown shop type."""
    out = []
    for i in range(n):
        hour, day = (i // 100) % 24, (i // 2400) % 28
        kind = "bakery" if i % 100 == 99 else TYPES[i % 5]
        row = f"2026-01-{day + 1:02d}T{hour:02d}:00:00Z,{i % 100 + 1},{kind},{(i * 3) % 20},{(i * 7) % 20}"
        out.append((row if i % 3 == 1 else f"{row},{(i // 3) % 2}").encode())
    return out


def check_answers(bootstrap: str, topic: str) -> tuple[int, int]:
    """(answers, distinct requests answered) in ``topic`` as a read_committed reader sees it (the trainer's
    bounded reader, from offset 0 to the end)."""
    import json

    from include.kafka.reader import BoundedReader

    reader = BoundedReader(clients_for(bootstrap), topic, f"bench-check-{uuid.uuid4().hex[:8]}", start_offsets={},
                           stream_timeout_s=10)
    seen, total = set(), 0
    try:
        for batch in reader.batches(10_000):
            for msg in batch:
                answer = json.loads(msg.value)
                seen.add((answer["partition"], answer["offset"]))
            total += len(batch)
    finally:
        reader.close()
    return total, len(seen)


def score_once(env: dict, batch: int) -> tuple[dict, float]:
    """``python -m include score`` in a fresh process on a fresh scorer group: its summary and the process's wall
    time (interpreter start and imports included)."""
    group = f"bench-scorer-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "include", "score", "--batch-messages", str(batch)],
                         env={**os.environ, **env, "RETRAIN_SCORER_GROUP": group}, cwd=PROJECT, capture_output=True,
                         text=True, timeout=1800)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"the scorer failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout), wall


def profile_once(env: dict, batch: int) -> str:
    """The hottest functions of one in-process run (after a first run has loaded TensorFlow)."""
    from include.serving.stream import ScoreOptions, score_requests
    from include.settings import settings_from_env

    profiler = cProfile.Profile()
    settings = settings_from_env({**env, "RETRAIN_SCORER_GROUP": f"bench-profile-{uuid.uuid4().hex[:8]}"})
    profiler.enable()
    score_requests(settings, ScoreOptions(batch_messages=batch, stream_timeout_s=10))
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--batch-messages", type=int, nargs="+", default=[10_000, 2_000])
    parser.add_argument("--profile", action="store_true", help="print the hottest functions of the first run")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results" / "scoring.md")
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    topic = f"bench-scoring-{uuid.uuid4().hex[:8]}"
    state = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "RETRAIN_STATE_DIR": str(state), "RETRAIN_TOPIC": topic,
           "RETRAIN_SCHEMA": "drone"}
    clients = clients_for(bootstrap)
    requests_topic = f"{topic}.requests"
    clients.ensure_topic(requests_topic, partitions=args.partitions)
    print(f"producing {args.requests:,} requests to {requests_topic} ({args.partitions} partitions)...")
    produce(bootstrap, requests_topic, requests(args.requests), args.requests)
    _register(env)
    rows = []
    try:
        for batch in args.batch_messages:
            delete_topics(clients, [f"{requests_topic}.predictions"])
            summary, wall = score_once(env, batch)
            total, distinct = check_answers(bootstrap, f"{requests_topic}.predictions")
            rows.append((batch, summary, wall, total, distinct))
            print(f"batch {batch:,}: {summary['records']:,} requests in {summary['seconds']:.2f} s = "
                  f"{summary['records_per_s']:,.0f} records/s ({summary['records'] / wall:,.0f} with process start), "
                  f"{summary['transactions']} transactions; answers read back {total:,} ({distinct:,} distinct)")
        if args.profile:
            print(profile_once(env, args.batch_messages[0]))
    finally:
        delete_topics(clients, [requests_topic, f"{requests_topic}.predictions"])
    publish(_report(args, rows), args.out)


def _register(env: dict) -> None:
    from include.lifecycle.registry import Registry
    from include.lifecycle.versions import VersionSource, register_version
    from include.schema import load_schema
    from include.settings import settings_from_env
    from include.training.model import build_model

    settings = settings_from_env(env)
    schema = load_schema("drone")
    register_version(Registry(settings), "default", build_model(schema, seed=0),
                     VersionSource(checkpoint_id="bench", run_id=None, schema_id=schema.id, topic=settings.topic,
                                   offsets={}, records_total=0))


def _report(args, rows) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Streaming scoring (exactly once)", "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {describe_machine()}, load average {load:.2f} at the end; "
        f"the broker runs on the same machine. Target: >= {TARGET_RPS:,} records/s.", "",
        f"{args.requests:,} requests (drone schema, every 3rd without its label, 1 % refused) in a topic of "
        f"{args.partitions} partition(s), scored by `python -m include score` (bounded) in a fresh process, "
        "each run on a fresh scorer group. records/s (the summary's) cover the whole run: fencing, offsets, model load, read, decode, "
        "score, encode, produce, commit (answers + offsets in one transaction per batch).", "",
        "| batch (requests per transaction) | requests | seconds | records/s | records/s with process start "
        "| transactions | answers read back (read_committed) | distinct requests answered |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch, s, wall, total, distinct in rows:
        lines.append(f"| {batch:,} | {s['records']:,} | {s['seconds']:.2f} | {s['records_per_s']:,.0f} | "
                     f"{s['records'] / wall:,.0f} | {s['transactions']} | {total:,} | {distinct:,} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
