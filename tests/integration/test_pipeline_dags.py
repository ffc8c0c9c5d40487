"""`airflow dags test` of ingest then training on generated data records accuracy history."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from include.history import db
from include.demo.generate import generate_range
from tests.support import airflow_env, run_airflow

pytestmark = pytest.mark.integration


def test_ingest_then_train_records_history(tmp_path, airflow_home, kafka_bootstrap, topic):
    landing = tmp_path / "landing"
    generate_range(date(2026, 1, 5), date(2026, 1, 6), landing, seed=11)
    state = tmp_path / "state"
    env = airflow_env(airflow_home, kafka_bootstrap, {
        "RETRAIN_LANDING_DIR": str(landing), "RETRAIN_STATE_DIR": str(state), "RETRAIN_TOPIC": topic,
        "RETRAIN_CONSUMER_GROUP": f"g-{topic}", "RETRAIN_STREAM_TIMEOUT_S": "3",
    })
    for logical_date in ("2026-01-06", "2026-01-07"):
        result = run_airflow(env, "dags", "test", "ingest_observations", logical_date)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    result = run_airflow(env, "dags", "test", "train_model", "2026-01-07")
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "state=success" in output, output[-6000:]
    assert "records/s" in output, "the task log shows no progress/summary line"

    engine = db.get_engine(f"sqlite:///{state / 'history.db'}")
    with engine.connect() as conn:
        runs = conn.execute(select(db.TrainingRun)).all()
        batches = conn.execute(select(func.count()).select_from(db.BatchMetric)).scalar_one()
        checkpoints = conn.execute(select(func.count()).select_from(db.CheckpointRecord)).scalar_one()
    assert len(runs) == 1 and runs[0].status == "success" and runs[0].dag_id == "train_model"
    assert runs[0].records == 4800 and runs[0].stop_reason == "end_offsets"
    assert batches == 48 and checkpoints == 1
