"""Benchmark: ingest and training throughput on 1 vs 3 brokers, replication factor 1 vs 3, 1 vs 6 partitions.

What issue 15 asks: ingest rows/s and training records/s with 1 vs 3 brokers, RF 1 vs 3, 1 vs 6 partitions, on this
machine, in one run, side by side, with what limits each. This script measures and PRINTS those figures (and writes
them as markdown to ``--out``); it never asserts on timing. Beside every figure it gives the CPU seconds spent in the
phase by the broker JVMs, by the client (this process, or the trainer process), and by everything else on the
machine, against the wall time times the cores: on 2 cores shared by 3 JVMs, CPU is expected to be the limit.

In one run:

* one drone-schema CSV of ``--rows`` rows (``include.demo.generate``, ``--shops`` shops, whole days in event-time
  order; written as ``bench/bench_ingest.py`` writes it);
* a single broker (``infra/kafka/kafka.sh start`` on ``--single-port``, its own state folder), then the 3-node cluster
  (``infra/kafka/kafka.sh cluster start`` on ``--cluster-port``: combined KRaft nodes, ``min.insync.replicas=2``),
  each started by this script, used alone (the other stopped) and stopped at the end;
* for each configuration (1 broker RF 1; 3 brokers RF 1; 3 brokers RF 3; each with 1 and with 6 partitions), on a
  topic of its own created with that replication factor (RF 1 topics on the cluster with ``min.insync.replicas=1``):

  - **ingest**: ``include.ingest.ingest_file`` of the file in this process: validation, one transaction (acks=all,
    idempotent), keyed by shop id, timestamp = event time, commit marker, ledger row; then read back read_committed
    (must hold every row);
  - **read**: the trainer's reader (``BoundedReader.fetches``: read_committed, whole fetches as columns, and with 6
    partitions the event-time merge) over the whole topic in this process: what the trainer's reader thread can
    hand over;
  - **train**: ``python -m include train --mode single_pass`` on the topic as its own process (``bench_training``'s
    runner): the whole run (TensorFlow's import and the compile included) and the run without its start-up.

The CPU figures: the JVMs' from ``/proc`` (psutil) per broker process; the client's from this process's CPU time
(ingest, read: the Python thread and librdkafka's threads) or the trainer child's (``RUSAGE_CHILDREN``); the
machine's busy time from ``/proc/stat``; "others" is the machine's busy time minus those (other work on the
machine, the kernel). Run it with ``scripts/bench.sh scaling`` or ``.venv/bin/python bench/bench_scaling.py --help``.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from bench.bench_ingest import count_committed, ingest_once, prepare_ingest, write_csv  # noqa: E402
from bench.bench_training import run_trainer  # noqa: E402
from bench.common import clients_for, machine as describe_machine, publish  # noqa: E402

KAFKA_SH = PROJECT / "infra" / "kafka" / "kafka.sh"
CORES = os.cpu_count() or 1
STARTUP = ("set-up", "TensorFlow and the model", "compile")  # a trainer run's stages before it reads


@dataclass(frozen=True)
class Config:
    brokers: int
    rf: int
    partitions: int

    @property
    def label(self) -> str:
        return f"{self.brokers} broker{'s' if self.brokers > 1 else ''}, RF {self.rf}, {self.partitions} partition" \
               f"{'s' if self.partitions > 1 else ''}"


CONFIGS = [Config(1, 1, 1), Config(1, 1, 6), Config(3, 1, 1), Config(3, 1, 6), Config(3, 3, 1), Config(3, 3, 6)]


# ---------------------------------------------------------------------------------------------------------
# Brokers


@dataclass
class Brokers:
    """A single broker or the 3-node cluster, started and stopped by the project's script."""

    cluster: bool
    state: Path
    port: int
    pids: list[int] = field(default_factory=list)

    def _sh(self, *args: str) -> str:
        env = {**os.environ, "KAFKA_PORT": str(self.port), "KAFKA_STATE_DIR": str(self.state),
               "KAFKA_CLUSTER_DIR": str(self.state), "KAFKA_CLUSTER_PORT": str(self.port)}
        cmd = [str(KAFKA_SH), *(["cluster"] if self.cluster else []), *args]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:])}: {result.stdout}\n{result.stderr}")
        return result.stdout.strip()

    @property
    def bootstrap(self) -> str:
        ports = [self.port + 10 * k for k in range(3)] if self.cluster else [self.port]
        return ",".join(f"127.0.0.1:{p}" for p in ports)

    def start(self) -> None:
        self._sh("start")
        if self.cluster:
            self.pids = [int(self._sh("pid", str(n))) for n in (1, 2, 3)]
        else:
            self.pids = [int((self.state / "broker.pid").read_text().strip())]

    def stop(self) -> None:
        self._sh("stop")


def wait_for_coordinator(bootstrap: str, timeout: float = 120.0) -> None:
    """Until the group coordinator answers (just after a start it says 'not coordinator')."""
    from confluent_kafka import KafkaException, TopicPartition

    deadline = time.monotonic() + timeout
    while True:
        consumer = clients_for(bootstrap).consumer("bench-warm-up", role="offsets")
        try:
            consumer.committed([TopicPartition("bench-warm-up", 0)], timeout=10)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
        finally:
            consumer.close()


# ---------------------------------------------------------------------------------------------------------
# CPU accounting


@dataclass
class Phase:
    """One measured phase: its wall time and the CPU seconds of each party."""

    what: str
    config: Config
    count: int = 0
    wall: float = 0.0
    jvm: float = 0.0
    client: float = 0.0
    machine: float = 0.0
    load: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.wall if self.wall else 0.0

    @property
    def others(self) -> float:
        return max(0.0, self.machine - self.jvm - self.client)

    @property
    def busy(self) -> float:
        """The machine's busy share of all its cores over the phase."""
        return self.machine / (self.wall * CORES) if self.wall else 0.0


def _jvm_cpu(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def _machine_busy() -> float:
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _own_cpu() -> float:
    """This process's CPU seconds and its waited-for children's (the trainer process)."""
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


@contextmanager
def measured(phase: Phase, pids: list[int]) -> Iterator[Phase]:
    jvm, client, busy, started = _jvm_cpu(pids), _own_cpu(), _machine_busy(), time.perf_counter()
    yield phase
    phase.wall = time.perf_counter() - started
    phase.jvm = _jvm_cpu(pids) - jvm
    phase.client = _own_cpu() - client
    phase.machine = _machine_busy() - busy
    phase.load = os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------------------
# The three measurements


def create_topic(bootstrap: str, topic: str, config: Config) -> None:
    """``topic`` with the configuration's partitions and replication factor (RF 1: min ISR 1, else the broker's)."""
    from confluent_kafka.admin import NewTopic

    extra = {"min.insync.replicas": "1"} if config.rf == 1 else {}
    admin = clients_for(bootstrap).admin()
    for future in admin.create_topics([NewTopic(topic, num_partitions=config.partitions,
                                                replication_factor=config.rf, config=extra)]).values():
        future.result(60)


def ingest(bootstrap: str, topic: str, path: Path, rows: int, work: Path, config: Config, pids: list[int]) -> Phase:
    from include.settings import get_settings

    settings = get_settings().with_overrides(kafka_bootstrap_servers=bootstrap)
    target = prepare_ingest(settings, topic, work / f"ledger-{topic}")
    phase = Phase("ingest", config, count=rows)
    with measured(phase, pids):
        ingest_once(target, path, rows)
    # The transaction markers are written after the commit returns: a count right away may stop short at the
    # last stable offset, so it is repeated for a while before it counts as a loss.
    for attempt in range(10):
        seen = count_committed(target.clients, topic)
        if seen == rows:
            break
        phase.extra["recounts"] = attempt + 1
        print(f"  {topic}: a read_committed consumer sees {seen:,} of {rows:,} rows; counting again", flush=True)
        time.sleep(2)
    else:
        raise RuntimeError(f"{topic}: a read_committed consumer sees {seen:,} rows, expected {rows:,}")
    return phase


def read(bootstrap: str, topic: str, config: Config, pids: list[int]) -> Phase:
    from include.kafka.reader import BoundedReader

    reader = BoundedReader(clients_for(bootstrap), topic, f"bench-read-{uuid.uuid4().hex[:8]}", start_offsets={},
                           stream_timeout_s=10)
    phase = Phase("read", config)
    try:
        reader.open()
        with measured(phase, pids):
            for records in reader.fetches(6_400):
                phase.count += len(records)
    finally:
        reader.close()
    phase.extra["stop"] = reader.stop_reason
    return phase


def train(bootstrap: str, topic: str, rows: int, work: Path, config: Config, pids: list[int]) -> Phase:
    phase = Phase("train", config)
    with measured(phase, pids):
        run = run_trainer(bootstrap, topic, work / f"train-{topic}", schema="drone")
    summary = run["summary"]
    if summary["records"] != rows:
        raise RuntimeError(f"{topic}: the trainer trained {summary['records']:,} records, expected {rows:,}")
    phase.count = summary["records"]
    timings = summary.get("timings") or {}
    phase.extra.update(run_seconds=summary["seconds"], startup=sum(timings.get(k, 0.0) for k in STARTUP),
                       timings=timings)
    return phase


# ---------------------------------------------------------------------------------------------------------
# Report


def _costs(p: Phase) -> str:
    """CPU microseconds per record of the JVMs and of the client, and what they would allow on free cores."""
    jvm, client = p.jvm / p.count * 1e6, p.client / p.count * 1e6
    ceiling = CORES * 1e6 / (jvm + client) if jvm + client else float("nan")
    top = "JVMs" if jvm >= client else "client"
    return f"{jvm:.1f} | {client:.1f} | {ceiling:,.0f} | {top} ({max(jvm, client) / (jvm + client):.0%})"


def _cpu_cells(p: Phase) -> str:
    return f"{p.jvm:.1f} / {p.client:.1f} / {p.others:.1f} | {p.busy:.0%} | {p.load:.1f}"


def render(args, info: dict, phases: list[Phase], recounts: int) -> str:
    by = {(p.what, p.config): p for p in phases}
    head = ("| configuration | {what} | seconds | CPU s: JVMs / client / others | machine busy | load | JVMs CPU µs per "
            "{unit} | client CPU µs per {unit} | {what} if {cores} cores were theirs alone | costliest |")
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    lines = [
        "# Scaling benchmark: 1 vs 3 brokers, replication factor 1 vs 3, 1 vs 6 partitions",
        "",
        f"- Run: {info['when']} on {info['machine']}; load average (1 min) before: {info['load_before']}, after: "
        f"{os.getloadavg()[0]:.2f}; the `load` column is the 1-minute load at each phase's end",
        f"- Data: one drone-schema CSV of {args.rows:,} rows ({info['bytes'] / 1e6:.1f} MB, {args.shops:,} shops, "
        f"generated days in event-time order)",
        "- Brokers: Kafka 3.9 from this project's Maven jars, `infra/kafka/kafka.sh start` (1 broker, heap 1 GB) and "
        "`kafka.sh cluster start` (3 combined KRaft nodes, heap 512 MB each, min.insync.replicas=2; RF 1 topics "
        "created with min.insync.replicas=1), used one at a time on the same machine",
        "- CPU columns: seconds of CPU spent during the phase by the broker JVMs (all of them), by the client (the "
        "ingest / read in this process, the trainer process), and by everything else on the machine (`others`: other "
        f"work, the kernel); machine busy = all CPU time / (wall x {CORES} cores). The CPU per record is the phase's "
        "cost whatever else runs; the estimate beside it is what that cost allows if the JVMs and the client had all "
        f"{CORES} cores (CPU-bound, perfectly overlapped: an upper bound), and `costliest` says which of the two "
        "spends more",
        "",
        "## Ingest (`ingest_file`: validate, one transaction, acks=all, idempotent, keyed, timestamp = event time)",
        "",
        head.format(what="rows/s", unit="row", cores=CORES), rule,
    ]
    for c in CONFIGS:
        p = by[("ingest", c)]
        lines.append(f"| {c.label} | **{p.rate:,.0f}** | {p.wall:.1f} | {_cpu_cells(p)} | {_costs(p)} |")
    lines += ["", "## Read (the trainer's reader over the whole topic: read_committed, columns, event-time merge of "
                  "6 partitions)", "", head.format(what="records/s", unit="record", cores=CORES), rule]
    for c in CONFIGS:
        p = by[("read", c)]
        lines.append(f"| {c.label} | **{p.rate:,.0f}** | {p.wall:.1f} | {_cpu_cells(p)} | {_costs(p)} |")
    lines += ["", "## Train (`python -m include train --mode single_pass`, own process: whole run (interpreter start "
                  "and imports apart); and without its start-up: set-up, TensorFlow's import, model, compile)", "",
              "| configuration | records/s whole run | records/s after start-up | seconds (process) | CPU s: JVMs / "
              "client / others | machine busy | load | JVMs CPU µs per record | client CPU µs per record | records/s "
              f"if {CORES} cores were theirs alone | costliest |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in CONFIGS:
        p = by[("train", c)]
        run, startup = p.extra["run_seconds"], p.extra["startup"]
        after = p.count / (run - startup) if run > startup else float("nan")
        lines.append(f"| {c.label} | **{p.count / run:,.0f}** | {after:,.0f} | {p.wall:.1f} | {_cpu_cells(p)} | "
                     f"{_costs(p)} |")
    lines += ["", f"Command: `bench/bench_scaling.py --rows {args.rows} --shops {args.shops}`; every topic read back "
                  "complete (ingest: read_committed count; read and train: every record)"
              + (f"; {recounts} read-back count(s) right after an ingest's commit stopped short and were counted "
                 "again (the transaction markers are written after the commit returns)" if recounts else "") + ".", ""]
    return "\n".join(lines)


# Long on purpose: a benchmark's main is its protocol, step by step, in the order the report states it.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="rows of the CSV file (default 500,000)")
    parser.add_argument("--shops", type=int, default=1_000, help="shops in the generated data (default 1,000)")
    parser.add_argument("--single-port", type=int, default=29092, help="the single broker's port (default 29092)")
    parser.add_argument("--cluster-port", type=int, default=29102,
                        help="the cluster's first port (default 29102; nodes 10 apart, controllers one above)")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results" / "scaling.md")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for data and broker state (default: system temp)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    work = Path(tempfile.mkdtemp(prefix="bench-scaling-", dir=args.tmp))
    info = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": describe_machine(),
            "load_before": f"{os.getloadavg()[0]:.2f}"}
    phases: list[Phase] = []
    run = uuid.uuid4().hex[:6]
    try:
        path = work / "observations_2026-01-01.csv"
        scratch = work / "days"
        scratch.mkdir()
        rows, info["bytes"] = write_csv(path, scratch, rows=args.rows, shops=args.shops)
        print(f"{rows:,} rows, {info['bytes'] / 1e6:.1f} MB; load {os.getloadavg()[0]:.2f}", flush=True)
        for cluster in (False, True):
            brokers = Brokers(cluster, work / ("kafka-cluster" if cluster else "kafka-single"),
                              args.cluster_port if cluster else args.single_port)
            print(f"starting {'the 3-node cluster' if cluster else 'a single broker'} ...", flush=True)
            try:
                brokers.start()
                wait_for_coordinator(brokers.bootstrap)
                for config in CONFIGS:
                    if (config.brokers == 3) != cluster:
                        continue
                    topic = f"bench-scaling-{run}-b{config.brokers}-rf{config.rf}-p{config.partitions}"
                    create_topic(brokers.bootstrap, topic, config)
                    for phase in (ingest(brokers.bootstrap, topic, path, rows, work, config, brokers.pids),
                                  read(brokers.bootstrap, topic, config, brokers.pids),
                                  train(brokers.bootstrap, topic, rows, work, config, brokers.pids)):
                        phases.append(phase)
                        print(f"  {config.label}: {phase.what} {phase.rate:,.0f}/s in {phase.wall:.1f} s; CPU s: "
                              f"JVMs {phase.jvm:.1f}, client {phase.client:.1f}, others {phase.others:.1f}; "
                              f"busy {phase.busy:.0%}; load {phase.load:.1f}", flush=True)
            finally:
                brokers.stop()
        recounts = sum(p.extra.get("recounts", 0) for p in phases)
        publish(render(args, info, phases, recounts), args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
