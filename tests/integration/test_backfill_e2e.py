"""End to end with the real scheduler: backfill three weeks through the DAGs, then reprocess one week.

Starts `airflow standalone` (scheduler, DAG processor, triggerer, API server) in a temporary Airflow home,
runs the main job's backfill (`airflow backfill create` of the ingest DAG; training follows on the Asset
events), and checks per-week rows, that every offset was trained exactly once, and the history per week.
Then `--reprocess-behavior completed` over week 2 must change nothing.
"""

from __future__ import annotations

import os
import subprocess
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from include.history import db
from include.demo.main_job import (INGEST_DAG, TRAIN_DAG, _api_runs, _cli_runs, accuracy_table, backfill, ensure_demo_data,
                                   list_runs, wait_until_idle)
from include.settings import settings_from_env
from tests.support import PROJECT, read_topic, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = date(2026, 1, 5)


@pytest.fixture
def standalone(tmp_path, kafka_bootstrap, monkeypatch):
    topic = unique("e2e")
    env = {
        "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__API__PORT": "18081",
        # ports of their own, so a `make run` Airflow on this machine does not collide
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "18793", "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "18794",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "RETRAIN_STATE_DIR": str(tmp_path / "state"),
        "RETRAIN_LANDING_DIR": str(tmp_path / "landing"), "RETRAIN_TOPIC": topic,
        "RETRAIN_CONSUMER_GROUP": f"g-{topic}", "RETRAIN_STREAM_TIMEOUT_S": "3",
        "AIRFLOW_CONN_KAFKA_DEFAULT": '{"conn_type": "kafka", "extra": {"bootstrap.servers": "%s"}}' % kafka_bootstrap,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{PROJECT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    # the CLI calls of include.demo.main_job need the same environment as the scheduler
    for line in subprocess.run(["bash", "-c", f"source {PROJECT}/infra/airflow/env.sh && env"], capture_output=True,
                               text=True, check=True).stdout.splitlines():
        key, _, value = line.partition("=")
        if key.startswith("AIRFLOW") or key in ("PYTHONPATH", "PATH"):
            monkeypatch.setenv(key, value)
    migrated = subprocess.run(["airflow", "db", "migrate"], capture_output=True, text=True, timeout=400)
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    yield settings_from_env(dict(os.environ))
    airflow_sh("stop")


def airflow_sh(command: str) -> None:
    result = subprocess.run([str(PROJECT / "scripts" / "airflow.sh"), command], capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _snapshot(settings):
    sessions = db.session_factory(settings.db_url)
    with sessions() as s:
        batches = list(s.scalars(select(db.BatchMetric).order_by(db.BatchMetric.seq)))
        files = list(s.scalars(select(db.IngestedFile).order_by(db.IngestedFile.file_date)))
    return batches, files


def test_backfill_three_weeks_then_reprocess_a_week_changes_nothing(standalone, kafka_bootstrap):
    settings = standalone
    ensure_demo_data(settings, START, weeks=3, drift_week=3)
    # As `make run` does: create the backfill with the scheduler stopped (SQLite metadata DB), then start.
    backfill(START, START + timedelta(days=20))
    airflow_sh("start")
    wait_until_idle((INGEST_DAG, TRAIN_DAG), timeout_s=1200, settle_s=15)

    batches, files = _snapshot(settings)
    assert [f.status for f in files] == ["committed"] * 21
    for week in range(3):
        week_files = files[7 * week: 7 * week + 7]
        assert sum(f.rows_valid for f in week_files) == 7 * 2400
    messages = read_topic(kafka_bootstrap, settings.topic)
    assert len(messages) == 21 * 2400
    offsets = sorted(m.offset() for m in messages)
    trained = sorted(o for b in batches for o in offsets if b.offsets_from["0"] <= o < b.offsets_to["0"])
    assert trained == offsets, "an offset was trained twice or never"
    per_week = {}
    for b in batches:
        day = date(1970, 1, 1) + timedelta(milliseconds=b.event_time_min)
        per_week[(day - START).days // 7] = per_week.get((day - START).days // 7, 0) + 1
    assert per_week == {0: 168, 1: 168, 2: 168}
    assert all(r["state"] == "success" for r in list_runs(INGEST_DAG) + list_runs(TRAIN_DAG))
    # The waits asked the REST API (not a CLI process per poll), and it lists what the CLI lists.
    for dag_id in (INGEST_DAG, TRAIN_DAG):
        api, cli = _api_runs(dag_id), _cli_runs(dag_id)
        assert api is not None, "the REST API could not be asked"
        assert sorted((r["run_id"], r["state"]) for r in api) == sorted((r["run_id"], r["state"]) for r in cli)
    print(accuracy_table(settings, ceiling=False))

    # Reprocess week 2 (completed runs are run again): nothing is ingested or trained twice.
    week2 = {(START + timedelta(days=d)).isoformat() for d in range(7, 14)}

    def week2_ends():
        return {r["logical_date"][:10]: r["end_date"] for r in list_runs(INGEST_DAG) if r["logical_date"][:10] in week2}

    before = week2_ends()
    assert len(before) == 7
    airflow_sh("stop")
    backfill(START + timedelta(days=7), START + timedelta(days=13), reprocess="completed")
    airflow_sh("start")
    wait_until_idle((INGEST_DAG, TRAIN_DAG), timeout_s=900, settle_s=15)
    batches_after, files_after = _snapshot(settings)
    assert [(b.batch_key, b.window_accuracy) for b in batches_after] == [(b.batch_key, b.window_accuracy) for b in batches]
    assert [(f.content_sha256, f.rows_valid, f.status) for f in files_after] == [(f.content_sha256, f.rows_valid, f.status) for f in files]
    assert len(read_topic(kafka_bootstrap, settings.topic)) == 21 * 2400
    after = week2_ends()
    assert all(after[d] != before[d] for d in week2), "week 2 was not run again"
    assert all(r["state"] == "success" for r in list_runs(INGEST_DAG) + list_runs(TRAIN_DAG))
