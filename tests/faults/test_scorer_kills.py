"""SIGKILL of the streaming scorer while requests keep arriving, then restarts: every request answered exactly once.

The scorer is the real CLI (``python -m include score``), killed by the production fault points
(``RETRAIN_FAULT_POINT``: after producing a transaction's answers, after sending its offsets, after its commit) and
at random moments; a producer keeps writing requests to two partitions meanwhile. The predictions topic, read
with read_committed, must hold exactly one answer per request offset: no gap, no duplicate.
"""

from __future__ import annotations

import json
import random
import secrets
import subprocess
import threading
import time

import pytest

from include.serving.answers import predictions_topic
from tests.scoring import mixed_requests, produce_requests, read_answers, register, request_offsets, score_cli, \
    scoring_env, settings_of
from tests.support import clients_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]

BATCH = ("--batch-messages", "200")
RANDOM_KILLS, RANDOM_BATCH = 4, 2000  # kills at random moments, each after this many fresh requests
# (fault point, what it interrupts); ":N" is the N-th transaction of that run.
KILLS = [
    ("scorer_after_produce:2", "answers produced, offsets not sent"),
    ("scorer_before_commit:3", "answers and offsets in the transaction, not committed"),
    ("scorer_after_commit:2", "just after a commit"),
]


def _produce_while(bootstrap: str, topic: str, chunks: int, size: int, pause: float, done: threading.Event) -> None:
    try:
        for c in range(chunks):
            produce_requests(bootstrap, topic, mixed_requests(size, start=2000 + c * size), key_prefix=f"c{c}-")
            time.sleep(pause)
    finally:
        done.set()


def _answers_end(bootstrap: str, topic: str) -> int:
    from tests.support import end_offset

    try:
        return end_offset(bootstrap, topic, 0) + end_offset(bootstrap, topic, 1)
    except Exception:  # noqa: BLE001 - the topic does not exist yet
        return 0


def _run(env, *args: str, fault: str | None = None, kill_after: float | None = None) -> tuple[int, str, str]:
    """One scorer process; with ``kill_after``, SIGKILLed that long after it starts writing answers."""
    proc = score_cli(env, *BATCH, *args, fault=fault)
    if kill_after is not None:
        out_topic = predictions_topic(settings_of(env).requests_topic)
        before = _answers_end(env["KAFKA_BOOTSTRAP_SERVERS"], out_topic)
        deadline = time.monotonic() + 60
        while (proc.poll() is None and time.monotonic() < deadline
               and _answers_end(env["KAFKA_BOOTSTRAP_SERVERS"], out_topic) == before):
            time.sleep(0.05)
        try:
            proc.wait(kill_after)
        except subprocess.TimeoutExpired:  # still running: the point of the test
            proc.kill()
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def test_scorer_sigkill_at_fault_points_and_random_times_while_requests_arrive(tmp_path, kafka_bootstrap, topic,
                                                                               fault_row):
    seed = secrets.randbits(32)
    rng = random.Random(seed)
    env = scoring_env(tmp_path / "state", kafka_bootstrap, topic)
    settings = settings_of(env)
    clients_for(kafka_bootstrap).ensure_topic(settings.requests_topic, partitions=2)
    register(settings, seed=1)
    produce_requests(kafka_bootstrap, settings.requests_topic, mixed_requests(2000), key_prefix="first-")
    done = threading.Event()
    chunks, size = 30, 300
    producer = threading.Thread(target=_produce_while,
                                args=(kafka_bootstrap, settings.requests_topic, chunks, size, 0.4, done))
    producer.start()
    runs, notes = 0, []
    try:
        for fault, label in KILLS:
            rc, _out, err = _run(env, fault=fault)
            runs += 1
            assert rc == -9, f"{fault} ({label}) was not reached (rc {rc}):\n{err[-3000:]}"
            notes.append(fault)
        for k in range(RANDOM_KILLS):
            # Fresh work, and --follow so the run cannot finish before the kill: every random kill lands mid-run.
            produce_requests(kafka_bootstrap, settings.requests_topic,
                             mixed_requests(RANDOM_BATCH, start=50_000 + k * RANDOM_BATCH), key_prefix=f"r{k}-")
            delay = round(rng.uniform(0.0, 1.5), 2)
            rc, _out, err = _run(env, "--follow", kill_after=delay)
            runs += 1
            assert rc == -9, f"the following scorer was not running {delay}s in (rc {rc}, seed {seed}):\n{err[-3000:]}"
            notes.append(f"killed {delay}s into scoring")
    finally:
        producer.join(300)
    assert done.is_set()
    summaries = []
    while not summaries or summaries[-1]["stop_reason"] != "nothing_new":
        rc, out, err = _run(env)
        runs += 1
        assert rc == 0 and len(summaries) < 5, err[-3000:]
        summaries.append(json.loads(out))

    requests = request_offsets(kafka_bootstrap, settings.requests_topic)
    answers = read_answers(kafka_bootstrap, predictions_topic(settings.requests_topic))
    uncommitted = read_answers(kafka_bootstrap, predictions_topic(settings.requests_topic), committed_only=False)
    produced = 2000 + chunks * size + RANDOM_KILLS * RANDOM_BATCH
    missing = set(requests) - set(answers.by_request)
    unexpected = set(answers.by_request) - set(requests)
    fault_row("scorer SIGKILL after produce / before commit / after commit and at random times, requests arriving; "
              "restart", runs=runs, produced=produced, in_topic=answers.total, duplicates=answers.duplicates,
              losses=len(missing) + len(unexpected),
              note=f"{', '.join(notes)} (seed {seed}); {uncommitted.total - answers.total} answers of aborted "
                   "transactions in the log, invisible to read_committed")
    assert len(requests) == produced
    assert not missing and not unexpected and answers.duplicates == 0, (len(missing), len(unexpected),
                                                                        answers.duplicates, seed)
    assert answers.total == produced
    assert sum(a[0].get("error") is not None for a in answers.by_request.values()) == produced // 10
