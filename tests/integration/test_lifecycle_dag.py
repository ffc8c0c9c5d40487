"""`airflow dags test train_model`: train, then the gate's branch, then promote or reject."""

from __future__ import annotations

import json
import re

import pytest

from tests.lifecycle import LifecycleRunner, week_files
from tests.support import airflow_env, run_airflow

pytestmark = pytest.mark.integration


def test_train_then_evaluate_then_promote_or_reject(tmp_path, airflow_home, kafka_bootstrap):
    runner = LifecycleRunner(tmp_path, kafka_bootstrap)
    days = week_files(tmp_path / "landing", 1)
    for chunk in (days[:2], days[2:4]):  # version 1 (champion), version 2 (candidate) by the CLI
        runner.ingest(chunk)
        runner.train()
    runner.ingest(days[4:])  # the DAG's run trains these, registers version 3 and judges version 2 on its rows
    env = airflow_env(airflow_home, kafka_bootstrap, {k: v for k, v in runner.env.items() if k.startswith("RETRAIN_")})
    result = run_airflow(env, "dags", "test", "train_model", "2026-01-12", "-c", '{"mode": "replay"}')
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    registry = runner.registry()
    decided = registry.get("default", 2)
    assert [v.version for v in registry.versions("default")] == [3, 2, 1]
    assert decided.status in ("champion", "rejected") and decided.gate["evaluated_on_version"] == 3
    taken, skipped = ("promote", "reject") if decided.status == "champion" else ("reject", "promote")
    states = task_states(env, output)
    assert states["train"] == "success" and states["evaluate"] == "success", states
    assert states[taken] == "success" and states[skipped] == "skipped", states


def task_states(env: dict, output: str) -> dict[str, str]:
    """Each task's final state in the run an ``airflow dags test`` log reports, from Airflow's own records."""
    run_id = re.search(r"DagRun Finished: dag_id=train_model, .*?run_id=([^,\s]+),", output).group(1)
    result = run_airflow(env, "tasks", "states-for-dag-run", "train_model", run_id, "-o", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    return {row["task_id"]: row["state"] for row in json.loads(result.stdout[result.stdout.index("["):])}
