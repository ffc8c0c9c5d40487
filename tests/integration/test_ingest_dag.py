"""`airflow dags test` of the ingest DAG over two logical dates ingests exactly those intervals' files."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from include.history import db
from include.demo.generate import generate_range
from tests.support import airflow_env, read_topic, run_airflow

pytestmark = pytest.mark.integration


def test_dags_test_ingests_the_files_of_each_interval(tmp_path, airflow_home, kafka_bootstrap, topic):
    landing = tmp_path / "landing"
    generate_range(date(2026, 1, 5), date(2026, 1, 8), landing, seed=3)
    env = airflow_env(
        airflow_home,
        kafka_bootstrap,
        {"RETRAIN_LANDING_DIR": str(landing), "RETRAIN_STATE_DIR": str(tmp_path / "state"), "RETRAIN_TOPIC": topic},
    )
    # `dags test DAG D` infers a manual run's interval as the last complete one before D: [D-1, D).
    for logical_date in ("2026-01-06", "2026-01-08"):
        result = run_airflow(env, "dags", "test", "ingest_observations", logical_date)
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "state=success" in output, output[-5000:]

    engine = db.get_engine(f"sqlite:///{tmp_path / 'state' / 'history.db'}")
    with engine.connect() as conn:
        names = sorted(r.file_name.rsplit("/", 1)[-1] for r in conn.execute(select(db.IngestedFile)))
    assert names == ["observations_2026-01-05.csv", "observations_2026-01-07.csv"]
    messages = read_topic(kafka_bootstrap, topic)
    assert len(messages) == 2 * 2400
    days = {m.value().decode()[:10] for m in messages}
    assert days == {"2026-01-05", "2026-01-07"}
