"""Helpers the tests share: a broker process wrapper, Airflow command runner, trainer process runner, unique names."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from include.demo.reference import BLOG_FILE, BLOG_ROWS  # noqa: F401 - re-exported for the tests

PROJECT = Path(__file__).resolve().parents[1]
KAFKA_SH = PROJECT / "infra" / "kafka" / "kafka.sh"
VENV_BIN = Path(sys.executable).parent


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def clients_for(bootstrap: str):
    """The project's Kafka client factory for a plain broker address (no SASL, no Airflow connection)."""
    from include.kafka.clients import KafkaClients
    from include.settings import settings_from_env

    return KafkaClients(settings_from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap}))


def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> bool:
    """Create ``topic`` through the project's factory; True when this call created it."""
    return clients_for(bootstrap).ensure_topic(topic, partitions=partitions)


@dataclass
class Broker:
    """A Kafka broker started by the project's own script, with its own state folder and port."""

    state_dir: Path
    port: int
    env: dict = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "KAFKA_STATE_DIR": str(self.state_dir), "KAFKA_PORT": str(self.port), **self.env}
        return subprocess.run([str(KAFKA_SH), *args], env=env, check=check, capture_output=True, text=True, timeout=300)

    def start(self) -> None:
        result = self._run("start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"broker did not start:\n{result.stdout}\n{result.stderr}")

    def stop(self) -> None:
        self._run("stop")

    def kill(self) -> None:
        self._run("kill")

    def status(self) -> bool:
        return self._run("status", check=False).returncode == 0

    def tool(self, *args: str) -> subprocess.CompletedProcess:
        """Run a Kafka tool class (e.g. org.apache.kafka.tools.consumer.group.ConsumerGroupCommand)."""
        return self._run("run-class", *args)


def airflow_env(airflow_home: Path, bootstrap: str, extra: dict | None = None) -> dict:
    """The environment of an ``airflow`` command for this project in ``airflow_home``."""
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(PROJECT),
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "AIRFLOW_CONN_KAFKA_DEFAULT": '{"conn_type": "kafka", "extra": {"bootstrap.servers": "%s"}}' % bootstrap,
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
    )
    env.update(extra or {})
    return env


def run_airflow(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``airflow ARGS`` and return the completed process (output captured as text)."""
    return subprocess.run(
        [str(VENV_BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=PROJECT
    )


def read_topic(bootstrap: str, topic: str, *, committed_only: bool = True, timeout: float = 30.0) -> list:
    """Every message of ``topic`` (all partitions) as seen by a read_committed (or uncommitted) consumer."""
    import time

    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
        }
    )
    messages = []
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending, deadline = set(partitions), time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                        continue
                    raise RuntimeError(msg.error())
                messages.append(msg)
        assert not pending, f"did not reach the end of {topic} in {timeout}s"
    finally:
        consumer.close()
    return messages


def end_offset(bootstrap: str, topic: str, partition: int = 0) -> int:
    """The partition's end offset (high watermark) now: one past its last record or transaction marker."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("watermarks")})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)[1]
    finally:
        consumer.close()




# The columns of a history row that depend on what was trained, not on which run trained it.
HISTORY_FACTS = ("batch_key", "seq", "offsets_from", "offsets_to", "n", "n_train", "n_eval", "loss", "train_accuracy",
                 "window_accuracy", "prequential_accuracy", "event_time_min", "event_time_max")


def history_facts(db_url: str, model: str = "default") -> list[tuple]:
    """The ``batch_metrics`` rows of ``model`` in order, each as its :data:`HISTORY_FACTS` (to compare two histories)."""
    from sqlalchemy import select

    from include.history import db

    with db.session_factory(db_url)() as s:
        rows = s.scalars(select(db.BatchMetric).where(db.BatchMetric.model_name == model).order_by(db.BatchMetric.seq))
        return [tuple(getattr(row, name) for name in HISTORY_FACTS) for row in rows]


def checkpoint_weights(checkpoint_dir: Path, model: str = "default") -> dict:
    """Every variable (weights and optimizer state) of the newest checkpoint's model, by name, read from its Keras
    weights file (no TensorFlow needed)."""
    import io
    import zipfile

    import h5py

    from include.training.checkpoint import CheckpointStore

    loaded = CheckpointStore(Path(checkpoint_dir) / model).load_latest(model=False)
    assert loaded is not None, f"no checkpoint of {model} in {checkpoint_dir}"
    with zipfile.ZipFile(io.BytesIO(loaded.model_bytes)) as keras_zip:
        data = keras_zip.read("model.weights.h5")
    out: dict = {}
    with h5py.File(io.BytesIO(data), "r") as h5:
        h5.visititems(lambda name, item: out.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return out


def ingest_blog_file(bootstrap: str, state: Path, prefix: str) -> str:
    """Ingest the blog author's file (transactionally) into a new topic; its name."""
    from include.ingest.interval import ingest_files
    from include.settings import settings_from_env

    topic = unique(prefix)
    settings = settings_from_env({"RETRAIN_STATE_DIR": str(state), "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                                  "RETRAIN_TOPIC": topic, "RETRAIN_SCHEMA": "blog_drift"})
    assert ingest_files([BLOG_FILE], settings=settings).rows == BLOG_ROWS
    return topic


def process_env(env: Mapping[str, str], fault: str | None = None) -> dict[str, str]:
    """A child's environment: this one without the project's own settings (a developer's RETRAIN_DB_URL must not
    reach a test's process), then ``env``."""
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("RETRAIN_", "KAFKA_")) and k != "AIRFLOW_CONN_KAFKA_DEFAULT"}
    full = {**inherited, "PYTHONPATH": str(PROJECT), "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    if fault:
        full["RETRAIN_FAULT_POINT"] = fault
    return full


@dataclass
class TrainerProcess:
    """``python -m include train`` as a real process, on the env's state folder, group and database.

    ``register``: the runs make model versions (off by default: the tests of training alone do not pay for it).
    """

    env: dict[str, str]
    runs: int = 0
    register: bool = False

    def start(self, *args: str, fault: str | None = None) -> subprocess.Popen:
        self.runs += 1
        flag = "--register" if self.register else "--no-register"
        return subprocess.Popen([sys.executable, "-m", "include", "train", flag, *args],
                                env=process_env(self.env, fault), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=PROJECT)

    def run(self, *args: str, fault: str | None = None, timeout: float = 600) -> tuple[int, dict | None, str]:
        proc = self.start(*args, fault=fault)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"trainer did not finish in {timeout}s:\n{err[-4000:]}")
        return proc.returncode, (json.loads(out) if proc.returncode == 0 else None), err

    def ok(self, *args: str) -> dict:
        rc, summary, err = self.run(*args)
        assert rc == 0, err[-4000:]
        return summary

    def kill_after_plan(self, *args: str, delay: Callable[[int], float], timeout: float = 600) -> tuple[int, str]:
        """Start a run and SIGKILL it ``delay(available)`` seconds after it logged its plan (``... (N records
        available)``), so that the moment is taken within the run's own work, whatever the machine's load; returns the
        exit code (0: it finished first) and its standard error."""
        proc = self.start(*args)
        lines: list[str] = []
        available: list[int] = []
        planned = threading.Event()

        def drain() -> None:
            for line in proc.stderr:
                lines.append(line)
                found = re.search(r"\((\d+) records available\)", line)
                if found and not available:
                    available.append(int(found.group(1)))
                    planned.set()
            planned.set()  # the end of its output: it exited before planning

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        planned.wait(timeout)
        try:
            proc.wait(timeout=delay(available[0]) if available else timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.stdout.read()
        proc.wait()
        reader.join(30)
        return proc.returncode, "".join(lines)


class Runner(TrainerProcess):
    """A :class:`TrainerProcess` with its own state folder (``tmp_path / "state"``), consumer group and SQLite
    history, on ``topic``; reads back what the runs recorded."""

    def __init__(self, tmp_path, bootstrap, topic, schema="blog_drift"):
        self.state = tmp_path / "state"
        self.group = unique("trainer")
        self.bootstrap, self.topic = bootstrap, topic
        super().__init__({"RETRAIN_STATE_DIR": str(self.state), "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                          "RETRAIN_TOPIC": topic, "RETRAIN_SCHEMA": schema, "RETRAIN_CONSUMER_GROUP": self.group,
                          "RETRAIN_STREAM_TIMEOUT_S": "3"})

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.state / 'history.db'}"

    def _rows(self, table: str, order: str) -> list:
        from sqlalchemy import select

        from include.history import db

        model = getattr(db, table)
        with db.session_factory(self.db_url)() as s:
            return list(s.scalars(select(model).order_by(getattr(model, order))))

    def batches(self) -> list:
        return self._rows("BatchMetric", "seq")

    def training_runs(self) -> list:
        return self._rows("TrainingRun", "started_at")

    def drift_events(self) -> list:
        return self._rows("DriftEvent", "seq")

    def committed(self) -> int | None:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group, "enable.auto.commit": False})
        try:
            return consumer.committed([TopicPartition(self.topic, 0)], timeout=30)[0].offset
        finally:
            consumer.close()
