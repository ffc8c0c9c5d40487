"""SIGKILL the leader of the observations partition on a 3-node cluster, during ingest and during training.

The cluster is the project's own (``infra/kafka/kafka.sh cluster``): three combined KRaft nodes, replication
factor 3, ``min.insync.replicas=2``, transaction and offsets topics replicated 3 with min ISR 2. Killing the
partition's leader leaves two in-sync replicas: a new leader is elected and writes go on without a manual step.
The killed node is started again in the background; afterwards every valid row must be in the topic once and every
offset trained once. Also here: a rolling restart of all three nodes, and a trainer on a 3-partition topic killed
again and again at random points, whose history and weights must be those of an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from include.ingest.errors import IngestError
from include.ingest.interval import ingest_files
from include.kafka.reader import OffsetError
from tests.faults.helpers import (
    BASE_PORT,
    batch_rows,
    check_history,
    check_topic,
    check_training,
    drone_rows,
    durable_state,
    env_for,
    Outage,
    free_ports,
    newest_checkpoint,
    settings_for,
    stage_hooks,
    train_in_process,
    trainer_args,
    unique,
    warm_up,
    write_csv,
)
from tests.support import KAFKA_SH, TrainerProcess, checkpoint_weights, history_facts

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.distributed]


@dataclass
class Cluster:
    """The 3-node cluster of this session: its script, state folder and first port."""

    state_dir: str
    port: int

    def _sh(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "KAFKA_CLUSTER_DIR": self.state_dir, "KAFKA_CLUSTER_PORT": str(self.port)}
        result = subprocess.run([str(KAFKA_SH), "cluster", *args], env=env, capture_output=True, text=True,
                                timeout=timeout)
        assert result.returncode == 0, f"kafka.sh cluster {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port + 10 * k}" for k in range(3))

    def leader(self, topic: str, partition: int = 0) -> int:
        """The node id (1-3) leading ``topic``'s partition now."""
        meta = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(topic, timeout=30)
        return meta.topics[topic].partitions[partition].leader

    def replicas(self, topic: str, partition: int = 0) -> list[int]:
        meta = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(topic, timeout=30)
        return list(meta.topics[topic].partitions[partition].replicas)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    port = free_ports(BASE_PORT + 40, 30)
    cluster = Cluster(str(tmp_path_factory.mktemp("kafka-cluster")), port)
    cluster._sh("start")
    try:
        warm_up(cluster.bootstrap)
        yield cluster
    finally:
        cluster._sh("stop")


def leader_outage(cluster: Cluster, topic: str) -> Outage:
    """SIGKILL the node leading ``topic``'s partition 0 (``killed`` is its id); it starts again in the background."""

    def kill() -> int:
        node = cluster.leader(topic)
        cluster._sh("kill", str(node))
        return node

    return Outage(kill, lambda node: cluster._sh("start", str(node)), cluster.bootstrap)


def test_leader_sigkill_during_ingest(tmp_path, cluster, fault_row):
    topic = unique("cl-ingest")
    big, small = drone_rows(100_000), drone_rows(500, start=100_000)
    files = [write_csv(tmp_path / "landing" / "observations_2026-01-05.csv", big),
             write_csv(tmp_path / "landing" / "observations_2026-01-06.csv", small)]
    env = env_for(tmp_path / "state", cluster.bootstrap, topic)
    outage = leader_outage(cluster, topic)
    try:
        # Killed inside the first file's transaction, after 65,536 rows were handed to the producer.
        with stage_hooks({"ingest_mid_file": lambda n: outage() if n == 1 else None}):
            first = ingest_files(files, settings=settings_for(env))
        outcome = "the run rode out the leader's death: " + ", ".join(f.status for f in first.files)
    except (IngestError, KafkaException) as exc:
        outcome = f"the run failed cleanly ({type(exc).__name__}); the retry finished it"
    outage.join()
    second = ingest_files(files, settings=settings_for(env))
    assert {f.status for f in second.files} <= {"skipped", "committed", "recovered"}
    assert len(cluster.replicas(topic)) == 3
    check = check_topic(cluster.bootstrap, topic, big + small)
    fault_row("3-node cluster: partition leader SIGKILLed during ingest (mid-file), restarted later", runs=2,
              produced=len(big) + len(small), in_topic=check.in_topic, duplicates=check.duplicates,
              losses=check.losses + check.unexpected, note=f"node {outage.killed} killed; {outcome}")
    assert check.exact, check


def test_leader_sigkill_during_training(tmp_path, cluster, fault_row):
    topic = unique("cl-train")
    rows = drone_rows(3000)
    env = env_for(tmp_path / "state", cluster.bootstrap, topic)
    ingest_files([write_csv(tmp_path / "landing" / "observations_2026-01-05.csv", rows)], settings=settings_for(env))
    data = check_topic(cluster.bootstrap, topic, rows)
    outage = leader_outage(cluster, topic)
    try:
        # Killed after the second train step; the checkpoint, history and offset commit that follow meet a new leader.
        summary = train_in_process(env, {"train_after_step": lambda n: outage() if n == 2 else None})
        outcome = f"the run rode out the leader's death ({summary.records} records, {summary.stop_reason})"
    except (KafkaException, OffsetError, RuntimeError) as exc:
        outcome = f"the run failed cleanly ({type(exc).__name__}); the next one resumed"
    outage.join()
    state = durable_state(env, data.offsets[0])
    assert not state.problems, state.problems
    train_in_process(env)
    final = check_training(settings_for(env).db_url, data.offsets)
    fault_row("3-node cluster: partition leader SIGKILLed during training, restarted later", runs=2,
              produced=len(rows), in_topic=data.in_topic, trained=final.trained,
              duplicates=final.duplicates + data.duplicates, losses=final.losses + data.losses,
              note=f"node {outage.killed} killed; {outcome}")
    assert final.exact and final.n_sum == len(rows), final
    check_history(env)


def test_rolling_restart_of_all_three_nodes_while_ingest_and_training_run(tmp_path, cluster, fault_row):
    """Every node restarted in turn (graceful stop, start, ready) while files are ingested and trained one by one."""
    topic = unique("cl-rolling")
    env = env_for(tmp_path / "state", cluster.bootstrap, topic)
    files, expected = [], []
    for day in range(40):
        rows = drone_rows(3000, start=day * 3000)
        when = date(2026, 1, 1) + timedelta(days=day)
        files.append(write_csv(tmp_path / "landing" / f"observations_{when.isoformat()}.csv", rows))
        expected += rows
    restarted: list[int] = []
    errors: list[BaseException] = []

    def rolling() -> None:
        try:
            for node in (1, 2, 3):
                cluster._sh("restart", str(node))
                restarted.append(node)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=rolling, daemon=True)
    thread.start()
    runs = failures = 0
    reasons: list[str] = []
    for path in files:
        # As the DAGs run: an interval's ingest is retried until it commits (days stay in order), training follows.
        for attempt in range(30):
            runs += 1
            try:
                ingest_files([path], settings=settings_for(env))
                break
            except (IngestError, KafkaException) as exc:
                failures += 1  # met a node going away and failed cleanly: the retry finishes it
                reasons.append(f"{path.name}: {type(exc).__name__}: {str(exc)[:300]}")
                time.sleep(1)  # as Airflow's retry_delay, shortened
        else:
            raise AssertionError(f"{path.name} never committed:\n" + "\n".join(reasons[-5:]))
        runs += 1
        try:
            train_in_process(env)
        except (KafkaException, OffsetError, RuntimeError):
            failures += 1
        if not thread.is_alive():
            break
    thread.join(300)
    assert not thread.is_alive() and not errors and restarted == [1, 2, 3], (restarted, errors)
    warm_up(cluster.bootstrap)
    done = ingest_files(files, settings=settings_for(env))
    assert {f.status for f in done.files} <= {"skipped", "committed", "recovered"}
    train_in_process(env)
    check = check_topic(cluster.bootstrap, topic, expected)
    final = check_training(settings_for(env).db_url, check.offsets)
    fault_row("3-node cluster: rolling restart of all nodes while files are ingested and trained one by one", runs=runs + 2,
              produced=len(expected), in_topic=check.in_topic, trained=final.trained,
              duplicates=check.duplicates + final.duplicates, losses=check.losses + check.unexpected + final.losses,
              note=f"nodes restarted in order {restarted}; {runs} runs during the restarts, {failures} failed cleanly")
    assert check.exact, check
    assert final.exact and final.n_sum == len(expected), final
    check_history(env)


def test_multi_partition_training_killed_at_random_points_and_resumed_gives_the_uninterrupted_history(
        tmp_path, cluster, fault_row):
    """3 partitions (replication factor 3) with late rows; the trainer SIGKILLed again and again, at fault points
    drawn at random (stage, and how many times it is passed first) and at random moments, restarted each time: its
    history rows and final weights must be those of an uninterrupted trainer on the same log."""
    topic = unique("cl-merge")
    env = env_for(tmp_path / "ingest", cluster.bootstrap, topic, RETRAIN_TOPIC_PARTITIONS=3)
    days = [drone_rows(2400, start=2400 * d) for d in range(3)]
    late = drone_rows(350, types=("florist", "grocery"))  # the first day's first hours, ingested last
    files = [write_csv(tmp_path / "landing" / f"observations_2026-01-0{d + 1}.csv", rows) for d, rows in enumerate(days)]
    files.append(write_csv(tmp_path / "landing" / "observations_2026-01-04.csv", late))
    ingest_files(files, settings=settings_for(env))
    data = check_topic(cluster.bootstrap, topic, [r for rows in days for r in rows] + late)
    assert data.exact and len(data.offsets) == 3, data

    whole_env = env_for(tmp_path / "whole", cluster.bootstrap, topic)
    timed = TrainerProcess(whole_env).ok(*trainer_args())["timings"]
    # a moment is drawn from the plan's log line to 60 % of the way through the records left (at the uninterrupted
    # run's speed): a run killed there has made some progress or none, and never finished first
    start_up = timed["TensorFlow and the model"] + timed["compile"]
    per_record = sum(timed.get(stage, 0.0) for stage in ("wait for reading", "decode", "train", "durability")) / (
        data.in_topic)
    killed_env = env_for(tmp_path / "killed", cluster.bootstrap, topic)
    trainer = TrainerProcess(killed_env)
    rng = random.Random(15)
    stages = ["train_after_step", "after_temp_write", "after_rename", "train_after_checkpoint", "train_after_history",
              "train_after_commit"]
    kills: list[str] = []
    for k in range(8):
        if k % 2 == 0:  # at a fault point: the n-th time the stage is passed (a checkpoint every 2 mini-batches)
            fault = f"{rng.choice(stages)}:{rng.randint(1, 12)}"
            rc, _summary, err = trainer.run(*trainer_args(), fault=fault)
        else:  # at a moment: from the import of TensorFlow to 60 % of the records left
            moment = Moment(rng.random() * start_up, rng.random() * 0.6 * per_record)
            rc, err = trainer.kill_after_plan(*trainer_args(), delay=moment.after)
            fault = str(moment)
        assert rc in (-9, 0), f"{fault}: rc {rc}:\n{err[-3000:]}"
        if rc == 0:
            break  # finished before the kill: nothing left to interrupt
        kills.append(fault)
        state = durable_state_of_partitions(killed_env, data.offsets)
        assert not state, (fault, state)
    trainer.ok(*trainer_args())
    whole, resumed = settings_for(whole_env), settings_for(killed_env)
    final = check_training(resumed.db_url, data.offsets)
    same_history = history_facts(resumed.db_url) == history_facts(whole.db_url)
    w_whole, w_resumed = checkpoint_weights(whole.checkpoint_dir), checkpoint_weights(resumed.checkpoint_dir)
    same_weights = w_whole.keys() == w_resumed.keys() and all(
        np.array_equal(w_whole[name], w_resumed[name]) for name in w_whole)
    fault_row("3-node cluster, 3 partitions with late rows: trainer SIGKILLed at random points (fault points and "
              "moments), restarted; same history and weights as an uninterrupted run", runs=trainer.runs + 1,
              produced=data.in_topic, in_topic=data.in_topic, trained=final.trained, duplicates=final.duplicates,
              losses=final.losses, note=f"{len(kills)} kills: {', '.join(kills)}; history "
                                        f"{'identical' if same_history else 'DIFFERENT'}, weights "
                                        f"{'identical' if same_weights else 'DIFFERENT'}")
    assert len(kills) >= 4, kills
    assert final.exact and final.n_sum == data.in_topic, final
    assert same_history and same_weights
    check_history(killed_env)


@dataclass
class Moment:
    """A kill ``start_up`` seconds plus ``per_record`` for each record left after a run logged its plan."""

    start_up: float
    per_record: float
    seconds: float | None = None

    def after(self, left: int) -> float:
        self.seconds = self.start_up + self.per_record * left
        return self.seconds

    def __str__(self) -> str:
        return "before the plan" if self.seconds is None else f"{self.seconds:.1f} s after the plan"


def durable_state_of_partitions(env, offsets) -> list[str]:
    """What a killed multi-partition run left breaks nothing: the history covers each partition's data offsets
    below its end at most once, and never runs past the newest checkpoint's offsets."""
    settings = settings_for(env)
    check = check_training(settings.db_url, offsets)
    problems = [] if check.duplicates == 0 else [f"offsets trained twice: {check}"]
    info = newest_checkpoint(env)
    ckpt = {int(p): o for p, o in (info.meta["offsets"] if info is not None else {}).items()}
    for row in batch_rows(settings.db_url):
        for p, o in row.offsets_to.items():
            if o > ckpt.get(int(p), 0):
                problems.append(f"history row {row.batch_key} runs past the checkpoint {ckpt}")
    return problems
