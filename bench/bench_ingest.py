"""Benchmark: the validated, exactly-once ingest beside the raw producer ceiling, and RSS on a big file.

What the issue asks: validate and produce at least 200,000 rows/s with acks=all and transactions from one process,
reported beside the raw confluent-kafka producer ceiling measured in the same run, with RSS flat on a 1 GB file.
This script measures and PRINTS those figures (and writes them as a markdown table to ``--out``); it never
asserts on timing, because throughput depends on the machine and on whatever else runs on it.

In one run, on a drone-schema CSV written by ``include.demo.generate`` (whole days concatenated, deterministic), each
measurement on a fresh topic:

* (a) raw producer ceiling: the file's data lines pre-encoded as bytes, ``producer_config`` (acks=all,
  idempotent), value only: no validation, no key, no headers, no transaction, no delivery callback;
* (b) the same raw producer inside one transaction (begin .. commit);
* (c) ``include.ingest.ingest_file`` end to end: hash, ledger, producer and ``init_transactions``, marker lookup,
  validation, produce with key, timestamp and headers, commit marker, commit, ledger row.

Rounds run (a), (b), (c) in turn, so the three see the same machine conditions; each is repeated ``--repeats``
times and the median is reported. After every run the topic is read back with a read_committed consumer and
must hold exactly the expected number of rows. With ``--rss-gb``, a file of about that size is ingested once
first (before the other runs have grown the heap) while a thread samples the process RSS every 0.2 s.

Run it with ``scripts/bench.sh`` (starts the broker) or ``.venv/bin/python bench/bench_ingest.py --help``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from bench.common import delete_topics, machine as describe_machine, publish  # noqa: E402

TARGET_ROWS_PER_S = 200_000
FIRST_DAY = date(2026, 1, 1)
SEED = 7
POLL_EVERY = 0x3FF  # serve delivery reports every 1,024 messages, as the ingest does
RSS_INTERVAL_S = 0.2
FLAT_RSS_MIB = 32  # growth from 10 % to 100 % of the file under this counts as flat

log = logging.getLogger("bench_ingest")


# ---------------------------------------------------------------------------------------------------------
# Data


def write_csv(path: Path, scratch: Path, *, rows: int | None = None, min_bytes: int | None = None,
              shops: int) -> tuple[int, int]:
    """Write one drone-schema CSV of generated days, cut at ``rows`` data rows or once ``min_bytes`` is reached.

    Days are generated one at a time (same seed and layout, consecutive dates) and appended without their header,
    so memory stays at one day whatever the size. Returns (data rows, bytes).
    """
    from include.demo.generate import generate_range

    written = size = 0
    day = FIRST_DAY
    with path.open("wb") as out:
        while (rows is None or written < rows) and (min_bytes is None or size < min_bytes):
            (day_path,) = generate_range(day, day, scratch, seed=SEED, shops=shops)
            header, _, body = day_path.read_bytes().partition(b"\n")
            if not size:
                out.write(header + b"\n")
                size += len(header) + 1
            lines = body.splitlines(keepends=True)
            if rows is not None:
                lines = lines[: rows - written]
            if min_bytes is not None:
                taken, need = [], min_bytes - size
                for line in lines:
                    if need <= 0:
                        break
                    taken.append(line)
                    need -= len(line)
                lines = taken
            chunk = b"".join(lines)
            out.write(chunk)
            written += len(lines)
            size += len(chunk)
            for leftover in scratch.iterdir():
                leftover.unlink()
            day += timedelta(days=1)
    return written, size


def data_lines(path: Path) -> list[bytes]:
    """The file's data lines (no header, no line end), as the raw producer sends them."""
    with path.open("rb") as handle:
        handle.readline()
        return handle.read().splitlines()


# ---------------------------------------------------------------------------------------------------------
# Kafka helpers


def create_topic(clients, topic: str, partitions: int) -> None:
    clients.ensure_topic(topic, partitions=partitions, retention_ms=-1)


def count_committed(clients, topic: str, timeout: float = 300.0) -> int:
    """How many messages a read_committed consumer sees in ``topic`` (all partitions, from the start)."""
    from confluent_kafka import KafkaError, TopicPartition

    consumer = clients.consumer(f"bench-ingest-count-{uuid.uuid4().hex[:8]}", role="control",
                                **{"fetch.wait.max.ms": 50})
    count = 0
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending, deadline = set(partitions), time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"did not reach the end of {topic} in {timeout:.0f}s ({count} messages so far)")
            for msg in consumer.consume(10_000, 0.5):
                error = msg.error()
                if error is None:
                    count += 1
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                else:
                    raise RuntimeError(f"reading {topic}: {error}")
    finally:
        consumer.close()
    return count


# ---------------------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Run:
    rows: int
    seconds: float
    cpu_seconds: float  # the whole process (Python thread and librdkafka threads)
    thread_seconds: float  # the Python thread that validates and produces: the one that cannot use a second core

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


@dataclass
class Measurement:
    label: str
    what: str
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.rate for r in self.runs)

    @property
    def cpu_us_per_row(self) -> float:
        return statistics.median(r.cpu_seconds / r.rows * 1e6 for r in self.runs)

    @property
    def thread_us_per_row(self) -> float:
        return statistics.median(r.thread_seconds / r.rows * 1e6 for r in self.runs)


def _timed(fn: Callable[[], int]) -> Run:
    gc.collect()
    cpu, thread, started = time.process_time(), time.thread_time(), time.perf_counter()
    rows = fn()
    return Run(rows, time.perf_counter() - started, time.process_time() - cpu, time.thread_time() - thread)


def produce_raw(clients, topic: str, values: list[bytes], *, transactional_id: str | None,
                warmup_topic: str) -> Run:
    """(a)/(b): values only, as fast as the client takes them; in one transaction when ``transactional_id``.

    The clock starts with the producer ready: connected, topic metadata known and its producer id acquired (by
    ``init_transactions``, or by one message to ``warmup_topic`` and a flush), so the ceiling is the client's.
    """
    producer = clients.producer(transactional_id=transactional_id)
    producer.list_topics(topic, timeout=30)
    if transactional_id:
        producer.init_transactions(60)
    else:
        producer.produce(warmup_topic, b"warm-up")
        if producer.flush(60):
            raise RuntimeError(f"{warmup_topic}: the warm-up message was not delivered")

    def send() -> int:
        produce, poll = producer.produce, producer.poll
        if transactional_id:
            producer.begin_transaction()
        sent = 0
        for value in values:
            try:
                produce(topic, value)
            except BufferError:
                while True:
                    poll(0.05)
                    try:
                        produce(topic, value)
                        break
                    except BufferError:
                        continue
            sent += 1
            if not sent & POLL_EVERY:
                poll(0)
        if transactional_id:
            producer.commit_transaction(120)  # flushes first
        elif producer.flush(120):
            raise RuntimeError(f"{topic}: messages left undelivered after 120 s")
        return sent

    return _timed(send)


@dataclass
class IngestTarget:
    """What one ``ingest_file`` run needs: its own topics and ledger, so nothing is skipped as already ingested."""

    settings: Any
    clients: Any
    sessions: Any
    topics: list[str]


def prepare_ingest(settings, topic: str, ledger_dir: Path) -> IngestTarget:
    from include.ingest.interval import prepare
    from include.ingest.markers import control_topic

    ledger_dir.mkdir(parents=True, exist_ok=True)
    run_settings = settings.with_overrides(
        topic=topic, dlq_topic=f"{topic}.dlq", schema_name="drone", state_dir=ledger_dir,
        db_url=f"sqlite:///{ledger_dir / 'history.db'}", checkpoint_dir=ledger_dir / "checkpoints",
    )
    clients, sessions = prepare(run_settings, use_airflow=False)
    return IngestTarget(run_settings, clients, sessions, [topic, run_settings.dlq_topic, control_topic(topic)])


def ingest_once(target: IngestTarget, path: Path, expected_rows: int) -> Run:
    """(c): one ``ingest_file`` call, end to end; fails unless it committed exactly ``expected_rows`` rows."""
    from include.ingest.transaction import ingest_file
    from include.schema import load_schema

    schema = load_schema("drone")

    def ingest() -> int:
        result = ingest_file(path, settings=target.settings, schema=schema, clients=target.clients,
                             sessions=target.sessions)
        if result.status != "committed" or result.rows != expected_rows or result.bad:
            raise RuntimeError(f"ingest_file: {result.status}, {result.rows} rows, {result.bad} bad; "
                               f"expected committed, {expected_rows} rows, 0 bad")
        return result.rows

    return _timed(ingest)


def verify(clients, topic: str, expected: int) -> None:
    seen = count_committed(clients, topic)
    if seen != expected:
        raise RuntimeError(f"{topic}: a read_committed consumer sees {seen:,} messages, expected {expected:,}")


# ---------------------------------------------------------------------------------------------------------
# RSS on a big file


class RssSampler:
    """Samples this process's RSS and the read position in ``path`` every ``interval`` seconds, in a thread."""

    def __init__(self, path: Path, interval: float = RSS_INTERVAL_S) -> None:
        import psutil

        self.process = psutil.Process()
        self.path = str(path.resolve())
        self.interval = interval
        self.samples: list[tuple[float, int, int | None]] = []  # (seconds, rss bytes, file position or None)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = time.perf_counter()

    def sample(self) -> None:
        position = None
        try:
            for opened in self.process.open_files():
                if opened.path == self.path:
                    position = opened.position
        except Exception:  # noqa: BLE001 - a file closed between listing and reading: no position this time
            position = None
        self.samples.append((time.perf_counter() - self._t0, self.process.memory_info().rss, position))

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self.sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self.sample()


@dataclass
class RssReport:
    file_bytes: int
    rows: int
    seconds: float
    before: int
    at: dict[int, int]  # percent of the file read by the validating pass -> RSS
    peak: int
    after: int

    @property
    def growth(self) -> int:
        return self.at[100] - self.at[10]


def rss_check(settings, path: Path, rows: int, size: int, ledger_dir: Path, topic: str,
              created: list[str]) -> RssReport:
    """Ingest ``path`` once while sampling RSS; RSS at 10/50/100 % of the validating pass, and the peak."""
    target = prepare_ingest(settings, topic, ledger_dir)
    created.extend(target.topics)
    gc.collect()
    sampler = RssSampler(path)
    sampler.sample()
    before = sampler.samples[0][1]
    sampler.start()
    try:
        run = ingest_once(target, path, rows)
    finally:
        sampler.stop()
    after = sampler.samples[-1][1]
    # The file is read twice: ingest_file hashes it first, then validates and produces it. The position falls
    # back to the start when the second pass opens it; that pass is the one that matters.
    passes: list[list[tuple[int, int]]] = []
    last = None
    for _, rss, position in sampler.samples:
        if position is None:
            continue
        if last is None or position < last:
            passes.append([])
        passes[-1].append((position, rss))
        last = position
    produce_pass = passes[-1] if passes else []
    at: dict[int, int] = {}
    for percent in (10, 50, 100):
        reached = [rss for position, rss in produce_pass if position >= size * percent / 100]
        # At 100 %: the last sample with the file open (flush and commit come after the read ends).
        at[percent] = (reached[0] if percent < 100 else reached[-1]) if reached else after
    verify(target.clients, topic, rows)
    return RssReport(size, rows, run.seconds, before, at, max(rss for _, rss, _ in sampler.samples), after)


# ---------------------------------------------------------------------------------------------------------
# Report


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"



def render(args, machine: Mapping[str, str], file_rows: int, file_bytes: int, measurements: list[Measurement],
           rss: RssReport | None) -> str:
    raw, ingest = measurements[0], measurements[-1]
    lines = [
        "# Ingest benchmark",
        "",
        f"- Run: {machine['when']} on {machine['machine']}; load average before/after: {machine['load_before']} / "
        f"{os.getloadavg()[0]:.2f} (the broker runs on the same machine)",
        f"- Kafka: {args.bootstrap}; confluent-kafka {machine['client']}, librdkafka {machine['librdkafka']}; "
        f"producer: {machine['producer']}",
        f"- File: {file_rows:,} rows, {file_bytes / 1e6:,.1f} MB, drone schema, include.demo.generate "
        f"({args.shops} shops, seed {SEED}, days from {FIRST_DAY})",
        f"- Each measurement {args.repeats}x, interleaved (a, b, c per round) on fresh topics; median reported; "
        "every run's topic read back read_committed and holding exactly the rows sent",
        "",
        "| measurement | runs (rows/s) | median rows/s | vs (a) | CPU µs/row: Python thread | CPU µs/row: process |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for m in measurements:
        runs = ", ".join(f"{r.rate:,.0f}" for r in m.runs)
        lines.append(f"| **{m.label}** {m.what} | {runs} | **{m.median:,.0f}** | {m.median / raw.median:.0%} | "
                     f"{m.thread_us_per_row:.2f} | {m.cpu_us_per_row:.2f} |")
    verdict = "met" if ingest.median >= TARGET_ROWS_PER_S else "NOT met"
    lines += [
        "",
        f"(c)/(a) = {ingest.median / raw.median:.2f}: the exactly-once, validating ingest runs at "
        f"{ingest.median / raw.median:.0%} of the raw producer ceiling measured in the same run.",
        f"Target {TARGET_ROWS_PER_S:,} rows/s for (c): {verdict} (median {ingest.median:,.0f} rows/s).",
        f"(c)'s Python thread (validation and produce calls, which one core bounds) used "
        f"{ingest.thread_us_per_row:.2f} µs of CPU per row: about {1 / ingest.thread_us_per_row * 1e6:,.0f} rows/s "
        "when it has a core to itself; the rest of the process (librdkafka threads) and the broker share the other.",
    ]
    if rss is not None:
        flat = "flat" if rss.growth < FLAT_RSS_MIB * 2**20 else "NOT flat"
        lines += [
            "",
            f"## RSS during ingest_file of a {rss.file_bytes / 1e9:.2f} GB file ({rss.rows:,} rows, "
            f"{rss.seconds:.0f} s, {rss.rows / rss.seconds:,.0f} rows/s)",
            "",
            "| before | at 10 % | at 50 % | at 100 % | peak | after |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {_mib(rss.before)} | {_mib(rss.at[10])} | {_mib(rss.at[50])} | {_mib(rss.at[100])} | "
            f"{_mib(rss.peak)} | {_mib(rss.after)} |",
            "",
            f"Growth from 10 % to 100 % of the file: {rss.growth / 2**20:+,.1f} MiB: {flat} "
            f"(flat = under {FLAT_RSS_MIB} MiB; percentages are of the validating pass, RSS sampled every "
            f"{RSS_INTERVAL_S} s).",
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None):
    from include.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of the throughput file (default 2,000,000)")
    parser.add_argument("--rss-gb", type=float, default=0.0,
                        help="also ingest a file of about this many GB while sampling RSS (default 0: skip)")
    parser.add_argument("--bootstrap", default=get_settings().kafka_bootstrap_servers,
                        help="Kafka bootstrap servers (default KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results" / "ingest.md",
                        help="markdown report (default bench/results/ingest.md)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement (default 3)")
    parser.add_argument("--shops", type=int, default=1000, help="shops in the generated data (default 1000)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the temporary files (default: system temp)")
    return parser.parse_args(argv)


# Long on purpose: a benchmark's main is its protocol, step by step, in the order the report states it.
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import confluent_kafka

    from include.kafka.clients import KafkaClients
    from include.settings import get_settings

    settings = get_settings().with_overrides(kafka_bootstrap_servers=args.bootstrap)
    clients = KafkaClients(settings)
    partitions = settings.topic_partitions
    producer = {k: v for k, v in clients.producer_config().items() if k not in clients.config}
    machine = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": describe_machine(),
        "load_before": f"{os.getloadavg()[0]:.2f}",
        "client": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "producer": ", ".join(f"{k}={v}" for k, v in producer.items()),
    }
    run_id = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.tmp))
    scratch = work / "days"
    scratch.mkdir()
    created: list[str] = []
    try:
        rss = None
        if args.rss_gb > 0:
            big = work / "big" / f"observations_{FIRST_DAY.isoformat()}.csv"
            big.parent.mkdir()
            print(f"writing a ~{args.rss_gb:g} GB file ...", flush=True)
            big_rows, big_bytes = write_csv(big, scratch, min_bytes=int(args.rss_gb * 1e9), shops=args.shops)
            print(f"RSS check: ingesting {big_rows:,} rows ({big_bytes / 1e9:.2f} GB) ...", flush=True)
            rss = rss_check(settings, big, big_rows, big_bytes, work / "ledger-rss", f"bench-ingest-{run_id}-rss",
                            created)
            print(f"  RSS at 10/50/100 %: {_mib(rss.at[10])} / {_mib(rss.at[50])} / {_mib(rss.at[100])}, "
                  f"peak {_mib(rss.peak)}", flush=True)
            big.unlink()
            delete_topics(clients, created)
            created.clear()

        path = work / f"observations_{FIRST_DAY.isoformat()}.csv"
        file_rows, file_bytes = write_csv(path, scratch, rows=args.rows, shops=args.shops)
        if file_rows != args.rows:
            raise RuntimeError(f"wrote {file_rows} rows, wanted {args.rows}")
        values = data_lines(path)
        print(f"throughput: {file_rows:,} rows, {file_bytes / 1e6:.1f} MB; {args.repeats} rounds of (a), (b), (c)",
              flush=True)
        raw = Measurement("(a)", "raw producer ceiling: pre-encoded values, acks=all, idempotent; no validation, "
                                 "key, headers, transaction or delivery callback")
        raw_tx = Measurement("(b)", "the same raw producer inside one transaction")
        ingest = Measurement("(c)", "`ingest_file` end to end: hash, ledger, validate, produce with key, timestamp "
                                    "and headers, one transaction + commit marker")
        warmup = f"bench-ingest-{run_id}-warmup"
        create_topic(clients, warmup, 1)
        created.append(warmup)
        for round_no in range(1, args.repeats + 1):
            topic = f"bench-ingest-{run_id}-raw-{round_no}"
            create_topic(clients, topic, partitions)
            created.append(topic)
            raw.runs.append(produce_raw(clients, topic, values, transactional_id=None, warmup_topic=warmup))
            verify(clients, topic, file_rows)

            topic = f"bench-ingest-{run_id}-rawtx-{round_no}"
            create_topic(clients, topic, partitions)
            created.append(topic)
            raw_tx.runs.append(produce_raw(clients, topic, values, transactional_id=f"bench-ingest-{run_id}-{round_no}",
                                           warmup_topic=warmup))
            verify(clients, topic, file_rows)

            target = prepare_ingest(settings, f"bench-ingest-{run_id}-e2e-{round_no}", work / f"ledger-{round_no}")
            created.extend(target.topics)
            ingest.runs.append(ingest_once(target, path, file_rows))
            verify(clients, target.settings.topic, file_rows)
            print(f"  round {round_no}: (a) {raw.runs[-1].rate:,.0f}  (b) {raw_tx.runs[-1].rate:,.0f}  "
                  f"(c) {ingest.runs[-1].rate:,.0f} rows/s", flush=True)
        del values

        report = render(args, machine, file_rows, file_bytes, [raw, raw_tx, ingest], rss)
        publish(report, args.out)
        return 0
    finally:
        delete_topics(clients, created)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
