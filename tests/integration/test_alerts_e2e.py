"""Alert e-mails end to end: real Airflow (`airflow dags test`), the real broker, a local SMTP server (aiosmtpd).

The train_model DAG trains the blog author's file in replay mode (its week 2 drifts) with an accuracy floor above
what the model reaches: its notify step e-mails one digest with the drift and the floor alert; running the step again
(a retry) sends nothing. A rejected candidate's alert goes out once, after the SMTP server was down for the first
attempt (which fails and leaves it pending). With no recipients nothing is sent and the log says so.
"""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from include.history import db
from include.lifecycle.alerts import notify_dag_run, pending_alerts, record_alert
from include.lifecycle.notifiers import NOBODY_EMAILED, EmailDigestNotifier
from include.lifecycle.registry import Registry
from include.settings import settings_from_env
from tests.history import write_history
from tests.mail import MailServer
from tests.support import airflow_env, ingest_blog_file, run_airflow, unique

pytestmark = pytest.mark.integration

RECIPIENTS = "ops@example.com, ml-team@example.com"


@pytest.fixture
def mail():
    server = MailServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_a_dag_run_emails_its_drift_and_floor_alerts_once(tmp_path, airflow_home, kafka_bootstrap, mail):
    topic = ingest_blog_file(kafka_bootstrap, tmp_path / "ingest", "alerts")
    state = tmp_path / "state"
    env = airflow_env(airflow_home, kafka_bootstrap, {
        "RETRAIN_STATE_DIR": str(state), "RETRAIN_TOPIC": topic, "RETRAIN_SCHEMA": "blog_drift",
        "RETRAIN_CONSUMER_GROUP": unique("g"), "RETRAIN_STREAM_TIMEOUT_S": "3", "RETRAIN_ACCURACY_FLOOR": "0.995",
        "RETRAIN_ALERT_EMAIL_TO": RECIPIENTS, "AIRFLOW_CONN_SMTP_DEFAULT": mail.connection_json,
    })
    result = run_airflow(env, "dags", "test", "train_model", "2026-01-07", "-c", '{"mode": "replay"}')
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "state=success" in output, output[-6000:]
    mail.wait_for(1)
    assert len(mail.messages) == 1, [m["Subject"] for m in mail.messages]
    (message,), (body,) = mail.messages, mail.bodies()
    assert mail.recipients == [["ops@example.com", "ml-team@example.com"]]
    assert message["From"] == "airflow@example.com"
    assert "model default" in message["Subject"] and "drift detected" in message["Subject"]
    assert "accuracy under the floor" in message["Subject"]
    assert "drift detected by ewma" in body and "under the floor 0.995" in body

    url = f"sqlite:///{state / 'history.db'}"
    with db.session_factory(url)() as session:
        alerts = list(session.scalars(select(db.Alert).order_by(db.Alert.id)))
    kinds = sorted({a.kind for a in alerts})
    assert kinds == ["accuracy_below_floor", "drift"], kinds
    assert all(a.notified_at is not None and a.notified_by.startswith("email to ops@example.com") for a in alerts)

    # The step again for the same DAG run (what a retry does): the same facts, already told: nothing sent.
    retry = run_airflow(env, "tasks", "test", "train_model", "notify", "2026-01-07")
    assert retry.returncode == 0, (retry.stdout + retry.stderr)[-6000:]
    mail.wait_for(2, timeout=2)
    assert len(mail.messages) == 1
    with db.session_factory(url)() as session:
        assert session.scalar(select(db.func.count()).select_from(db.Alert)) == len(alerts)


@pytest.fixture
def registry(tmp_path):
    settings = settings_from_env({"RETRAIN_STATE_DIR": str(tmp_path)})
    write_history(settings.db_url, run_batches=(20,), baseline=False)
    return Registry(settings)


def test_a_rejected_candidate_is_emailed_once_after_a_failed_send(registry, mail, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", mail.connection_json)
    monkeypatch.setenv("RETRAIN_ALERT_EMAIL_TO", RECIPIENTS)
    record_alert(registry, "default", "candidate_rejected", "rejected:2",
                 "candidate 2 rejected: accuracy 0.812 vs champion 0.904 on 1,000 rows (p = 0.001)", version=2)
    mail.stop()  # the first attempt finds no server
    with pytest.raises(Exception):
        notify_dag_run("default", "train_model", "manual__none", [EmailDigestNotifier()], registry=registry)
    assert [a.alert_key for a in pending_alerts(registry, "default")] == ["rejected:2"]
    mail.start()
    result = notify_dag_run("default", "train_model", "manual__none", [EmailDigestNotifier()], registry=registry)
    assert result["delivered"] == 1
    again = notify_dag_run("default", "train_model", "manual__none", [EmailDigestNotifier()], registry=registry)
    assert again["delivered"] == 0
    mail.wait_for(1)
    assert len(mail.messages) == 1 and "1 candidate rejected" in mail.messages[0]["Subject"]
    assert "candidate 2 rejected: accuracy 0.812 vs champion 0.904" in mail.bodies()[0]


def test_no_recipients_sends_nothing_and_says_so(registry, mail, monkeypatch, caplog, capfd):
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", mail.connection_json)
    monkeypatch.delenv("RETRAIN_ALERT_EMAIL_TO", raising=False)
    record_alert(registry, "default", "drift", "drift:p0:0", "drift detected")
    with caplog.at_level(logging.WARNING):
        result = notify_dag_run("default", "train_model", "manual__none", [EmailDigestNotifier()], registry=registry)
    assert result["notified_by"] == NOBODY_EMAILED
    assert "nobody was e-mailed" in caplog.text + capfd.readouterr().out  # Airflow's logging may print it
    mail.wait_for(1, timeout=1)
    assert mail.messages == []
