"""What the fault-injection tests share: data, the processes under test, the invariant checks, private servers.

The invariant every test checks after its fault (and recovery):

* every valid CSV row is in the topic exactly once, as a read_committed consumer sees it (:func:`check_topic`);
* every data offset of the topic is trained exactly once: the ``batch_metrics`` rows' offset ranges tile the data
  offsets, without overlap or gap (:func:`check_training`), and the history agrees with the newest checkpoint and
  the consumer group (:func:`check_history`).

Nothing here talks to the broker ``make run`` uses: every broker, database and folder is the test's own.
"""

from __future__ import annotations

import bisect
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from tests.support import KAFKA_SH, PROJECT, Broker, process_env, read_topic, unique

POSTGRES_SH = PROJECT / "infra" / "postgres" / "postgres.sh"
HEADER = "observed_at,shop_id,shop_type,x,y,busy"
SHOP_TYPES = ("grocery", "pharmacy", "restaurant", "electronics", "florist")
#: The session broker's port (tests/conftest.py); this suite's own servers take the ports just above it.
BASE_PORT = int(os.environ.get("TEST_KAFKA_PORT", "19092"))
# Mini-batches of the trainer processes: 100 messages, a durable checkpoint after every 2 (see trainer_args).
BATCH = 100
CHUNK_BATCHES = 2


# ---------------------------------------------------------------------------------------------------------
# Data


def drone_rows(n: int, start: int = 0, types: Sequence[str] = SHOP_TYPES) -> list[str]:
    """``n`` valid rows of the drone schema, all different (so a duplicate in the topic is visible by value).

    Row ``i`` is shop ``i % 100 + 1`` at hour ``(i // 100) % 24`` of a day counted from 2026-01-01.
    """
    rows = []
    for i in range(start, start + n):
        shop, hour, day = i % 100 + 1, (i // 100) % 24, i // 2400
        month, mday = 1 + day // 28, 1 + day % 28
        rows.append(f"2026-{month:02d}-{mday:02d}T{hour:02d}:00:00Z,{shop},{types[i % len(types)]},"
                    f"{(i * 3) % 20},{(i * 7) % 20},{(i // 3) % 2}")
    return rows


def write_csv(path: Path, rows: Sequence[str], header: str | None = HEADER, newline: str = "\n") -> Path:
    lines = ([header] if header is not None else []) + list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(newline.join(lines) + newline, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------
# Environments and the processes under test


def env_for(state: Path, bootstrap: str, topic: str, **extra: Any) -> dict[str, str]:
    """The project's environment variables for one test: its own state folder, topic and consumer group."""
    env = {"RETRAIN_STATE_DIR": str(state), "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "RETRAIN_TOPIC": topic,
           "RETRAIN_CONSUMER_GROUP": unique("trainer"), "RETRAIN_STREAM_TIMEOUT_S": "3"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def settings_for(env: Mapping[str, str]):
    from include.settings import settings_from_env

    return settings_from_env(dict(env))


def ingest_cli(env: Mapping[str, str], files: Sequence[Path], fault: str | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m include ingest FILES`` as a real process (SIGKILLed at ``fault``, if given)."""
    return subprocess.run([sys.executable, "-m", "include", "ingest", *map(str, files)], env=process_env(env, fault),
                          capture_output=True, text=True, timeout=timeout, cwd=PROJECT)


def trainer_args(*extra: str) -> list[str]:
    """A checkpoint after every CHUNK_BATCHES mini-batches, so a short topic crosses every step boundary often."""
    return ["--chunk-batches", str(CHUNK_BATCHES), "--checkpoint-every-s", "0", *extra]


@contextmanager
def stage_hooks(hooks: Mapping[str, Callable[[int], None]]) -> Iterator[Counter]:
    """In this process, call ``hooks[stage](n)`` the n-th time the code under test reaches a fault point.

    The production fault points (``include.faults.reached``) are the hook sites; in-process they never kill.
    """
    import include.faults as faults

    original, counts = faults.reached, Counter()

    def reached(stage: str) -> None:
        counts[stage] += 1
        hook = hooks.get(stage)
        if hook is not None:
            hook(counts[stage])

    faults.reached = reached
    try:
        yield counts
    finally:
        faults.reached = original


def train_in_process(env: Mapping[str, str], hooks: Mapping[str, Callable[[int], None]] | None = None,
                     **options: Any):
    """One bounded training run in this process (same code path as the CLI), with optional stage hooks."""
    from include.training.trainer import TrainOptions, train

    opts = {"chunk_batches": CHUNK_BATCHES, "checkpoint_every_s": 0.0, "register": False, **options}
    with stage_hooks(hooks or {}):
        return train(settings_for(env), TrainOptions(**opts))


# ---------------------------------------------------------------------------------------------------------
# Invariant checks


@dataclass
class TopicCheck:
    in_topic: int
    duplicates: int  # extra copies of expected rows
    losses: int  # expected rows missing
    unexpected: int  # rows that are not expected at all
    offsets: dict[int, list[int]] = field(default_factory=dict)  # data offsets per partition

    @property
    def exact(self) -> bool:
        return self.duplicates == 0 and self.losses == 0 and self.unexpected == 0


def check_topic(bootstrap: str, topic: str, expected: Sequence[str]) -> TopicCheck:
    """Compare the topic's read_committed content with the expected rows, as multisets of values."""
    messages = read_topic(bootstrap, topic)
    have = Counter(m.value().decode("utf-8", "replace") for m in messages)
    want = Counter(expected)
    offsets: dict[int, list[int]] = {}
    for m in messages:
        offsets.setdefault(m.partition(), []).append(m.offset())
    return TopicCheck(
        in_topic=len(messages),
        duplicates=sum(max(0, n - want[v]) for v, n in have.items() if v in want),
        losses=sum(max(0, n - have[v]) for v, n in want.items()),
        unexpected=sum(n for v, n in have.items() if v not in want),
        offsets={p: sorted(o) for p, o in offsets.items()},
    )


@dataclass
class TrainCheck:
    trained: int  # distinct data offsets inside some mini-batch row
    duplicates: int  # extra coverings (an offset in two rows counts one)
    losses: int  # data offsets in no row
    rows: int
    n_sum: int  # sum of the rows' message counts

    @property
    def exact(self) -> bool:
        return self.duplicates == 0 and self.losses == 0


def batch_rows(db_url: str, model: str = "default") -> list:
    from sqlalchemy import select

    from include.history import db

    with db.session_factory(db_url)() as s:
        return list(s.scalars(select(db.BatchMetric).where(db.BatchMetric.model_name == model)
                              .order_by(db.BatchMetric.seq)))


def check_training(db_url: str, offsets: Mapping[int, Sequence[int]], model: str = "default") -> TrainCheck:
    """How the ``batch_metrics`` rows of ``model`` cover the topic's data offsets (transaction markers skipped)."""
    rows = batch_rows(db_url, model)
    cover: Counter = Counter()
    for r in rows:
        for p, lo in r.offsets_from.items():
            data = offsets.get(int(p), [])
            hi = r.offsets_to[p]
            for o in data[bisect.bisect_left(data, lo):bisect.bisect_left(data, hi)]:
                cover[(int(p), o)] += 1
    every = [(p, o) for p, data in offsets.items() for o in data]
    return TrainCheck(
        trained=sum(1 for key in every if cover[key] > 0),
        duplicates=sum(n - 1 for n in cover.values() if n > 1),
        losses=sum(1 for key in every if cover[key] == 0),
        rows=len(rows),
        n_sum=sum(r.n for r in rows),
    )


def ledger(env: Mapping[str, str]) -> dict[str, tuple[str, int]]:
    """The ingest ledger of the env's topic: file name -> (status, valid rows)."""
    from sqlalchemy import select

    from include.history import db

    settings = settings_for(env)
    with db.session_factory(settings.db_url)() as s:
        rows = s.scalars(select(db.IngestedFile).where(db.IngestedFile.topic == settings.topic))
        return {r.file_name: (r.status, r.rows_valid) for r in rows}


def committed(bootstrap: str, group: str, topic: str, partitions: Sequence[int] = (0,),
              extra: Mapping[str, Any] | None = None) -> dict[int, int | None]:
    """The consumer group's committed offsets (None where it has none)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, **(extra or {}), "group.id": group,
                         "enable.auto.commit": False})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=30)
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in got}
    finally:
        consumer.close()


def newest_checkpoint(env: Mapping[str, str], model: str = "default"):
    """The newest valid checkpoint's info (meta only), as the trainer would pick it."""
    from include.training.checkpoint import CheckpointStore

    settings = settings_for(env)
    return CheckpointStore(Path(settings.checkpoint_dir) / model).latest_info()


def check_history(env: Mapping[str, str], model: str = "default") -> None:
    """History, checkpoint and consumer group agree: the state a finished (or recovered) run must leave.

    The newest checkpoint's offsets are the group's committed offsets and the end of the history rows; its
    record is in the database; no run is left 'running'.
    """
    from sqlalchemy import select

    from include.history import db

    settings = settings_for(env)
    info = newest_checkpoint(env, model)
    assert info is not None, "no checkpoint"
    ckpt = {int(p): o for p, o in info.meta["offsets"].items()}
    group = committed(settings.kafka_bootstrap_servers, settings.consumer_group, settings.topic, sorted(ckpt),
                      settings.kafka_extra_config)
    assert group == ckpt, f"group offsets {group} != checkpoint offsets {ckpt}"
    rows = batch_rows(settings.db_url, model)
    ends: dict[int, int] = {}
    for r in rows:
        for p, o in r.offsets_to.items():
            ends[int(p)] = max(ends.get(int(p), 0), o)
    assert all(ends.get(p, 0) <= o for p, o in ckpt.items()), f"history {ends} runs past the checkpoint {ckpt}"
    with db.session_factory(settings.db_url)() as s:
        assert s.get(db.CheckpointRecord, info.checkpoint_id) is not None, "newest checkpoint not recorded"
        running = s.scalars(select(db.TrainingRun).where(db.TrainingRun.model_name == model,
                                                         db.TrainingRun.status == "running")).all()
    assert not running, f"runs left 'running': {[r.run_id for r in running]}"


@dataclass
class DurableState:
    """What a crashed or failed run left: group offset, end of the history rows, newest checkpoint's offset."""

    group: int
    history_end: int
    checkpoint: int
    partial: TrainCheck  # coverage of the data offsets below history_end
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"group {self.group} <= history {self.history_end} <= checkpoint {self.checkpoint}"


def durable_state(env: Mapping[str, str], offsets: Sequence[int], model: str = "default") -> DurableState:
    """What a crash left (single-partition topic), with ``problems`` listing any break of the invariant:
    group offset <= history end <= newest checkpoint (up to transaction markers), the history covers [0, its
    end) exactly once, and the checkpoint carries the rows the history lacks (the next run writes them). That is "no offset committed past
    what history and checkpoint agree on".
    """
    settings = settings_for(env)
    rows = batch_rows(settings.db_url, model)
    end = max((r.offsets_to["0"] for r in rows), default=0)
    info = newest_checkpoint(env, model)
    ckpt = info.meta["offsets"]["0"] if info is not None else 0
    group = committed(settings.kafka_bootstrap_servers, settings.consumer_group, settings.topic,
                      extra=settings.kafka_extra_config)[0] or 0
    partial = check_training(settings.db_url, {0: [o for o in offsets if o < end]}, model)
    state = DurableState(group, end, ckpt, partial)

    def data_end(below: int) -> int:
        """One past the last data offset below ``below``: offsets from there up are transaction markers only."""
        return max((o for o in offsets if o < below), default=-1) + 1

    # A run that read to the end also steps over the commit marker after the last record: the checkpoint (and
    # then the group) may lie past the history's end by markers, never by data.
    if not (group <= ckpt and data_end(group) <= end <= ckpt):
        state.problems.append(f"offsets out of order: {state}")
    if end < data_end(ckpt):
        carried = info.meta.get("history", [])
        if not (carried and carried[0]["offsets_from"]["0"] == end
                and carried[-1]["offsets_to"]["0"] == data_end(ckpt)):
            state.problems.append(f"checkpoint {info.checkpoint_id} does not carry the history rows {end}-{ckpt}")
    if not (partial.exact and partial.n_sum == end):
        state.problems.append(f"history below {end} is not exactly once: {partial}")
    return state


# ---------------------------------------------------------------------------------------------------------
# Private servers


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(first: int, count: int, attempts: int = 40) -> int:
    """The first port of ``count`` consecutive free ports, from ``first`` on in steps of ``count``."""
    for i in range(attempts):
        start = first + i * count
        if all(port_is_free(start + k) for k in range(count)):
            return start
    raise RuntimeError(f"no {count} free consecutive ports from {first}")


@dataclass
class OwnBroker:
    """A broker of the suite's own (its own port and state folder), with a SASL_PLAINTEXT listener too.

    Tests may SIGKILL it (:meth:`kill`) and must leave it running (:meth:`start`).
    """

    broker: Broker
    sasl_port: int
    user: str
    password: str

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    def sasl_config(self) -> dict[str, str]:
        return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": self.user,
                "sasl.password": self.password}

    def kill(self) -> None:
        self.broker.kill()

    def start(self) -> None:
        self.broker.start()


@dataclass
class Postgres:
    """A private PostgreSQL server on a port of its own, run by the project's ``infra/postgres/postgres.sh`` (the
    script ``make run-cluster`` uses); :meth:`stop` takes it away. Superuser ``postgres`` with a random password."""

    root: Path
    port: int
    password: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        from sqlalchemy.engine import URL

        return URL.create("postgresql+psycopg2", username="postgres", password=self.password, host="127.0.0.1",
                          port=self.port, database=database).render_as_string(hide_password=False)

    def _script(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "POSTGRES_STATE_DIR": str(self.root), "POSTGRES_PORT": str(self.port),
               "POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": self.password, "POSTGRES_DB": "postgres",
               "POSTGRES_OPTIONS": "-c fsync=off -c full_page_writes=off"}
        return subprocess.run([str(POSTGRES_SH), *args], env=env, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        """Start it (initialised on first use) and wait until it accepts connections."""
        result = self._script("start")
        assert result.returncode == 0, result.stdout + result.stderr

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; ``immediate`` is a crash as far as clients can tell (connections cut, no goodbye)."""
        self._script("stop", mode)

    def create_database(self, name: str) -> str:
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.password,
                                dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.url(name)


def make_postgres() -> Postgres:
    """A fresh server, started (skips the test when PostgreSQL is not installed)."""
    if subprocess.run([str(POSTGRES_SH), "bindir"], capture_output=True).returncode != 0:
        import pytest

        pytest.skip("PostgreSQL is not installed (make system-deps installs it)")
    pg = Postgres(root=Path(tempfile.mkdtemp(prefix="faults-pg-")), port=free_ports(BASE_PORT + 8, 1),
                  password=secrets.token_urlsafe(12))
    pg.start()
    return pg


def kafka_tool(*args: str) -> subprocess.CompletedProcess:
    """Run one of Kafka's own tool classes (``infra/kafka/kafka.sh run-class``). They often exit 0 on errors:
    check their effect, not their exit code."""
    return subprocess.run([str(KAFKA_SH), "run-class", *args], capture_output=True, text=True, timeout=300)


def warm_up(bootstrap: str, timeout: float = 90.0) -> None:
    """Wait until the broker's group coordinator answers (just after a start it says 'not coordinator')."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    def ready() -> bool:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "faults-warm-up", "enable.auto.commit": False})
        try:
            consumer.committed([TopicPartition("faults-warm-up", 0)], timeout=10)
            return True
        except KafkaException:
            return False
        finally:
            consumer.close()

    wait_for(ready, timeout, f"the group coordinator of {bootstrap}", every=1.0)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)



class Outage:
    """Kill something now (``kill`` returns what it killed) and start it again in the background (start-up takes a
    while: that is the outage); :meth:`join` waits for it and for the cluster at ``bootstrap`` to answer."""

    def __init__(self, kill: Callable[[], Any], start: Callable[[Any], None], bootstrap: str) -> None:
        self.kill, self.start, self.bootstrap = kill, start, bootstrap
        self.killed: Any = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def __call__(self) -> None:
        self.killed = self.kill()
        self.thread = threading.Thread(target=self._start, daemon=True)
        self.thread.start()

    def _start(self) -> None:
        try:
            self.start(self.killed)
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def join(self) -> None:
        assert self.thread is not None, "the fault point was never reached: nothing was killed"
        self.thread.join(300)
        assert not self.thread.is_alive() and self.error is None, f"{self.killed} did not come back: {self.error}"
        warm_up(self.bootstrap)
