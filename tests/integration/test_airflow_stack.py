"""Airflow is real: `airflow dags test` runs a DAG whose tasks reach Kafka and import TensorFlow."""

from __future__ import annotations

import pytest

from tests.support import airflow_env, run_airflow

pytestmark = pytest.mark.integration


def test_dags_test_runs_a_tensorflow_task(airflow_home, kafka_bootstrap):
    result = run_airflow(airflow_env(airflow_home, kafka_bootstrap), "dags", "test", "stack_check", "2026-01-02")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "state=success" in output, output[-5000:]
    assert "'tensorflow': '2.16" in output, "the TensorFlow task did not report its version"
    assert "'brokers': 1" in output, "the Kafka task did not reach the broker"
