"""Faults of the distributed stack: Airflow's CeleryExecutor with two workers, against the real parts.

One stack for the module, started by the project's own ``scripts/cluster.sh`` (what ``make run-cluster`` runs):
PostgreSQL, Redis, the 3-node Kafka cluster (replication factor 3, min ISR 2), the API server, scheduler, DAG
processor, triggerer and two Celery workers, with checkpoints and models in one shared folder. The DAGs are the
project's; runs are created through Airflow's REST API, as a user's script would.

Two settings differ from ``make run-cluster``, both only to make the faults quick and deterministic:

* ``[scheduler] task_instance_heartbeat_timeout`` 15 s (default 300 s; detection every 1 s), so the scheduler fails
  a killed worker's task quickly; the DAG's own ``retry_delay`` (30 s) then applies as in production;
* ``[celery] worker_concurrency`` 1, so two tasks running at once run on two different workers.

What a killed worker leaves behind in Redis does not matter here: Airflow's Celery settings acknowledge a message
late (``task_acks_late``), but Redis redelivers an unacknowledged one only after ``visibility_timeout`` (a day), and a
redelivered message of a try that already ran is refused by the API server (``TaskAlreadyRunningError``). The retry
comes from the scheduler: the task stops heartbeating, the scheduler marks it up for retry, the retry is a new
message, which the live worker takes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from include.ingest.interval import ingest_files
from include.ingest.markers import control_topic
from tests.faults.helpers import (
    BASE_PORT,
    batch_rows,
    check_history,
    check_topic,
    check_training,
    drone_rows,
    free_ports,
    ledger,
    newest_checkpoint,
    settings_for,
    wait_for,
    warm_up,
    write_csv,
)
from tests.support import PROJECT, read_topic, unique

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.distributed, pytest.mark.slow]

CLUSTER_SH = PROJECT / "scripts" / "cluster.sh"
INGEST, TRAIN = "ingest_observations", "train_model"
# Training rows for the worker kill, checkpointed after every chunk of 64 mini-batches (checkpoint_every_s 0): the
# kill lands within milliseconds of the first checkpoint, which leaves ~23,600 rows (a second or more) to the retry.
KILL_ROWS = 30_000
# The file two ingest runs race on.
RACE_ROWS = 200_000
ACTIVE = {"queued", "running"}


@dataclass
class Stack:
    """The module's stack: the environment scripts/cluster.sh runs with, the REST API, what went into the topic."""

    root: Path
    env: dict[str, str]  # given to scripts/cluster.sh (ports, folders, the test's overrides)
    project_env: dict[str, str] = field(default_factory=dict)  # what the Airflow processes see
    token: str = ""
    expected: list[str] = field(default_factory=list)  # every valid row ingested into the topic so far

    def sh(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run([str(CLUSTER_SH), *args], env=self.env, capture_output=True, text=True,
                                timeout=timeout, cwd=PROJECT)
        assert result.returncode == 0, f"cluster.sh {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        return result

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['CLUSTER_API_PORT']}"

    @property
    def bootstrap(self) -> str:
        return self.project_env["KAFKA_BOOTSTRAP_SERVERS"]

    @property
    def landing(self) -> Path:
        return Path(self.project_env["RETRAIN_LANDING_DIR"])

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.url}/api/v2{path}", headers={"Authorization": f"Bearer {self.token}"},
                                 timeout=60, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:2000]}"
        return response.json() if response.content else None

    def pause(self, dag_id: str, paused: bool) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict | None = None, **body: Any) -> str:
        # run_after in the past: this run goes before the scheduled run that unpausing the DAG creates.
        payload = {"logical_date": None, "run_after": "2026-01-01T00:00:00Z", "conf": conf or {}, **body}
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=payload)["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def task(self, dag_id: str, run_id: str, task_id: str) -> dict:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")["task_instances"]

    def returned(self, dag_id: str, run_id: str, task_id: str) -> Any:
        entry = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                         params={"deserialize": True})
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) else value

    def wait_idle(self, *dag_ids: str, timeout: float = 300) -> None:
        wait_for(lambda: not any(r["state"] in ACTIVE for d in dag_ids for r in self.runs(d)), timeout,
                 f"no active runs of {dag_ids}", every=1.0)

    def wait_done(self, dag_id: str, run_id: str, task_id: str, timeout: float = 300, watch=None) -> str:
        """Wait until ``task_id`` of the run has finished for good (success or failed, not up for retry)."""
        deadline = time.monotonic() + timeout
        while (state := self.task(dag_id, run_id, task_id)["state"]) not in ("success", "failed", "upstream_failed"):
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id} {run_id} {task_id} still {state} after {timeout}s")
            if watch is not None:
                watch()
            time.sleep(0.5)
        return state

    def worker_of(self, ti_id: str) -> str | None:
        """The Celery worker whose processes run task instance ``ti_id`` now (its task runner's title names it)."""
        for name in ("worker-1", "worker-2"):
            leader = Path(self.env["CLUSTER_STATE_DIR"], "run", f"{name}.pid")
            try:
                sid = int(leader.read_text())
            except (OSError, ValueError):
                continue
            for process in psutil.process_iter(["cmdline"]):
                try:
                    if os.getsid(process.pid) == sid and any(ti_id in part for part in process.info["cmdline"] or []):
                        return name
                except (OSError, psutil.Error):
                    continue
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting for its parent is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def seconds(start: datetime | str | None, end: datetime | str | None) -> str:
    """Seconds between two instants (the API's ISO strings or datetimes), or '?' when one is missing."""
    if start is None or end is None:
        return "?"
    start, end = (datetime.fromisoformat(x.replace("Z", "+00:00")) if isinstance(x, str) else x for x in (start, end))
    return f"{(end - start).total_seconds():.0f}"


def topic_check(stack: Stack, timeout: float = 60):
    """The topic against every row ingested so far, once what was committed is visible: a transaction's commit
    markers reach the partitions after the producer's commit returns, so a reader may briefly see less."""
    deadline = time.monotonic() + timeout
    while True:
        check = check_topic(stack.bootstrap, stack.project_env["RETRAIN_TOPIC"], stack.expected)
        if not check.losses or time.monotonic() > deadline:
            return check
        time.sleep(1)


@pytest.fixture(scope="module")
def stack():
    root = Path(tempfile.mkdtemp(prefix="celery-stack-"))
    root.chmod(0o755)  # the PostgreSQL server runs as the postgres user when the tests run as root
    kafka_port = free_ports(BASE_PORT + 100, 30)
    # Past the whole cluster's range (nodes at +0/+10/+20, controllers one above): free_ports only knows the ports
    # that are busy now, and the cluster has not started yet (a busy BASE_PORT + 100 once put the API on node 2's).
    port = free_ports(kafka_port + 30, 6)
    topic = unique("celery")
    env = {
        **os.environ,
        "CLUSTER_STATE_DIR": str(root / "cluster"), "CLUSTER_API_PORT": str(port),
        "CLUSTER_POSTGRES_PORT": str(port + 1), "CLUSTER_REDIS_PORT": str(port + 2), "CLUSTER_LOG_PORT": str(port + 3),
        "KAFKA_CLUSTER_PORT": str(kafka_port), "KAFKA_CLUSTER_DIR": str(root / "kafka"),
        "LANDING_HOST_DIR": str(root / "landing"),
        "RETRAIN_TOPIC": topic, "RETRAIN_CONSUMER_GROUP": f"g-{topic}", "RETRAIN_STREAM_TIMEOUT_S": "3",
        # Quick and deterministic faults (the module docstring says why).
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "1",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
    }
    stack = Stack(root, env)
    try:
        started = time.monotonic()
        shown = stack.sh("start").stderr.strip().splitlines()
        print(f"stack started in {time.monotonic() - started:.0f}s: " + "; ".join(shown[-2:]))
        shown = subprocess.run(["bash", "-c", f"source {PROJECT}/infra/cluster/env.sh && env -0"], env=env,
                               capture_output=True, check=True).stdout.decode()
        stack.project_env = dict(item.split("=", 1) for item in shown.split("\0") if "=" in item)
        passwords = json.loads(Path(stack.project_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
        response = httpx.post(f"{stack.url}/auth/token", json={"username": "admin", "password": passwords["admin"]},
                              timeout=30)
        assert response.status_code == 201, response.text
        stack.token = response.json()["access_token"]
        for dag_id in (INGEST, TRAIN):
            wait_for(lambda: httpx.get(f"{stack.url}/api/v2/dags/{dag_id}", timeout=10,
                                       headers={"Authorization": f"Bearer {stack.token}"}).status_code == 200,
                     120, f"{dag_id} parsed", every=1.0)
        warm_up(stack.bootstrap)
        yield stack
    finally:
        subprocess.run([str(CLUSTER_SH), "stop"], env=env, capture_output=True, timeout=300)
        shutil.rmtree(root, ignore_errors=True)


def test_worker_sigkilled_mid_training_retry_resumes_on_the_other_worker(stack, fault_row):
    model = "celery-kill"
    env = {**stack.project_env}
    rows = drone_rows(KILL_ROWS)
    ingest_files([write_csv(stack.root / "direct" / "observations_2026-01-05.csv", rows)], settings=settings_for(env))
    stack.expected += rows
    data = topic_check(stack)
    assert data.exact, data
    total = len(data.offsets[0])

    began = time.monotonic()
    run_id = stack.trigger(TRAIN, {"model_name": model, "checkpoint_every_s": 0})
    stack.pause(TRAIN, False)
    ti: dict = {}
    wait_for(lambda: ti.update(stack.task(TRAIN, run_id, "train")) or ti.get("state") == "running", 180,
             "the train task running", every=0.5)
    workers: dict[int, str | None] = {1: None}
    wait_for(lambda: workers.update({1: stack.worker_of(ti["id"])}) or workers[1] is not None, 60,
             "the train task's process", every=0.2)
    # Killed as soon as its first checkpoint is durable: the whole worker, task supervisor and runner with it (the
    # processes `cluster.sh kill` kills, listed first, so that the kill itself takes microseconds).
    doomed = [int(pid) for pid in stack.sh("pids", workers[1]).stdout.split()]
    wait_for(lambda: newest_checkpoint(env, model) is not None, 180, "the first checkpoint", every=0.02)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    print(f"killed {workers[1]} {time.monotonic() - began:.0f}s after the trigger")
    at_kill = newest_checkpoint(env, model).meta["offsets"]["0"]
    assert 0 < at_kill < total, f"checkpoint at {at_kill} of {total}: the kill did not land mid-run; more rows"
    wait_for(lambda: not any(map(alive, doomed)), 30, "the killed processes gone", every=0.1)

    restart: list[subprocess.Popen] = []

    def watch() -> None:  # where the retry runs (each try has a task instance id of its own)
        now = stack.task(TRAIN, run_id, "train")
        if workers.get(2) is None and now["try_number"] == 2 and now["state"] == "running":
            workers[2] = stack.worker_of(now["id"])
            if workers[2] is not None:  # the killed worker comes back (for the next test) while the retry runs
                restart.append(subprocess.Popen([str(CLUSTER_SH), "start", workers[1]], env=stack.env,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    killed_at = datetime.now(timezone.utc)
    state = stack.wait_done(TRAIN, run_id, "train", timeout=300, watch=watch)
    stack.pause(TRAIN, True)
    tries = stack.tries(TRAIN, run_id, "train")
    summary = stack.returned(TRAIN, run_id, "train")
    if not restart or restart[0].wait(timeout=300) != 0:
        stack.sh("start", workers[1])  # the next test wants both workers

    final = check_training(env["RETRAIN_DB_URL"], data.offsets, model)
    keys = [r.batch_key for r in batch_rows(env["RETRAIN_DB_URL"], model)]
    fault_row("Celery worker SIGKILLed (whole process tree) mid-training; Airflow retries on the other worker",
              runs=len(tries), produced=len(rows), in_topic=data.in_topic, trained=final.trained,
              duplicates=final.duplicates, losses=final.losses,
              note=f"{workers[1]} killed after the checkpoint at offset {at_kill} of {total}; try 2 on "
                   f"{workers.get(2)} resumed at {summary['offsets_from']['0']} and trained {summary['records']}; "
                   f"try 1 failed {seconds(killed_at, tries[0]['end_date'])}s after the kill (heartbeat timeout 15s), "
                   f"try 2 started {seconds(tries[0]['end_date'], tries[-1]['start_date'])}s later (retry_delay 30s) "
                   f"and took {seconds(tries[-1]['start_date'], tries[-1]['end_date'])}s")
    assert state == "success", (state, tries)
    assert [t["try_number"] for t in tries] == [1, 2] and tries[-1]["state"] == "success", tries
    assert workers.get(2) is not None and workers[2] != workers[1], workers
    assert summary["checkpoint_from"] is not None and summary["offsets_from"]["0"] >= at_kill, summary
    assert summary["records"] == total - summary["offsets_from"]["0"], summary  # the retry trained only the rest
    assert final.exact and final.n_sum == total, final
    assert len(keys) == len(set(keys)) == final.rows, "a mini-batch has more than one history row"
    check_history(env, model)


def test_two_ingest_runs_of_one_interval_on_two_workers_one_transaction_wins(stack, fault_row):
    env = {**stack.project_env}
    day = date(2026, 2, 1)
    rows = drone_rows(RACE_ROWS, start=KILL_ROWS)
    path = write_csv(stack.landing / f"observations_{day.isoformat()}.csv", rows)
    stack.expected += rows
    stack.wait_idle(INGEST)
    # A backfill run and a manual run of the same data interval: backfill runs do not count against the DAG's
    # max_active_runs=1, so both start at once; each worker takes one (concurrency 1).
    stack.api("POST", "/backfills", json={"dag_id": INGEST, "from_date": f"{day}T00:00:00Z",
                                           "to_date": f"{day}T00:00:00Z", "max_active_runs": 1})
    manual = stack.trigger(INGEST, logical_date=f"{day}T12:00:00Z", data_interval_start=f"{day}T00:00:00Z",
                           data_interval_end=f"{day + timedelta(days=1)}T00:00:00Z")
    backfill = next(r["dag_run_id"] for r in stack.runs(INGEST) if r["run_type"] == "backfill")
    stack.pause(INGEST, False)
    seen: dict[str, set[str]] = {manual: set(), backfill: set()}
    together: list[dict[str, str]] = []
    ids: dict[str, str] = {}

    def watch() -> None:
        for run_id in seen:
            if run_id not in ids:
                ti = stack.task(INGEST, run_id, "ingest")
                if ti.get("id"):
                    ids[run_id] = ti["id"]
        now = {run_id: stack.worker_of(ti_id) for run_id, ti_id in ids.items()}
        for run_id, worker in now.items():
            if worker:
                seen[run_id].add(worker)
        if len(now) == 2 and all(now.values()):
            together.append(now)

    states = {run_id: stack.wait_done(INGEST, run_id, "ingest", timeout=300, watch=watch) for run_id in seen}
    stack.pause(INGEST, True)
    outcomes = {}
    for run_id in seen:
        tries = stack.tries(INGEST, run_id, "ingest")
        result = stack.returned(INGEST, run_id, "ingest")
        outcomes[run_id] = [t["state"] for t in tries[:-1]] + [f["status"] for f in result["files"]]
    check = topic_check(stack)
    settings = settings_for(env)
    markers = [m for m in read_topic(stack.bootstrap, control_topic(settings.topic))
               if json.loads(m.value())["file"] == str(path)]
    in_ledger = {name: entry for name, entry in ledger(env).items() if name == str(path)}
    fault_row("two ingest runs of one interval at once on two Celery workers (backfill + manual run)",
              runs=sum(len(o) for o in outcomes.values()), produced=len(stack.expected), in_topic=check.in_topic,
              duplicates=check.duplicates, losses=check.losses + check.unexpected,
              note=f"{len(rows)} rows in the raced file (the topic holds the module's other rows too); ran at once "
                   f"on {sorted(together[0].values()) if together else 'never together'}; attempts "
                   f"{sorted(outcomes.values())}; {len(markers)} commit marker")
    assert all(s == "success" for s in states.values()), (states, outcomes)
    assert together and len(set(together[0].values())) == 2, f"the runs never ran at once on two workers: {seen}"
    assert check.exact, check
    assert len(markers) == 1, f"{len(markers)} committed transactions of {path.name}"
    assert in_ledger == {str(path): ("committed", RACE_ROWS)}, in_ledger
    assert sorted(o[-1] for o in outcomes.values()).count("committed") == 1, outcomes
