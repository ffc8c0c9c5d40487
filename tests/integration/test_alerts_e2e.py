"""Alert e-mails end to end: real Airflow (`airflow dags test`), the real broker, a local SMTP server (aiosmtpd).

The train_model DAG trains the blog author's file in replay mode (its week 2 drifts) with an accuracy floor above
what the model reaches; the mail server refuses the notify step's first attempt, Airflow retries the task and the
retry e-mails one digest with the drift and the floor alert; running the step again sends nothing. Three weekly DAG
runs make the gate reject a candidate trained on flipped labels: one digest says so. A rejected candidate's alert goes out once, after the SMTP server was down for the first
attempt (which fails and leaves it pending). With no recipients nothing is sent and the log says so.
"""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import select

from include.history import db
from include.ingest.interval import ingest_files
from include.lifecycle.alerts import notify_dag_run, pending_alerts, record_alert
from include.lifecycle.notifiers import NOBODY_EMAILED, EmailDigestNotifier
from include.lifecycle.registry import Registry
from include.settings import settings_from_env
from tests.history import write_history
from tests.mail import MailServer
from tests.lifecycle import week_files
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
    """The mail server refuses the first attempt (451): the notify task fails, Airflow retries it after its retry
    delay, and the retry sends the one digest; running the step again for the same DAG run sends nothing."""
    topic = ingest_blog_file(kafka_bootstrap, tmp_path / "ingest", "alerts")
    state = tmp_path / "state"
    env = airflow_env(airflow_home, kafka_bootstrap, {
        "RETRAIN_STATE_DIR": str(state), "RETRAIN_TOPIC": topic, "RETRAIN_SCHEMA": "blog_drift",
        "RETRAIN_CONSUMER_GROUP": unique("g"), "RETRAIN_STREAM_TIMEOUT_S": "3", "RETRAIN_ACCURACY_FLOOR": "0.995",
        "RETRAIN_ALERT_EMAIL_TO": RECIPIENTS, "AIRFLOW_CONN_SMTP_DEFAULT": mail.connection_json,
    })
    mail.refuse_next = 1
    result = run_airflow(env, "dags", "test", "train_model", "2026-01-07", "-c", '{"mode": "replay"}')
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "state=success" in output, output[-6000:]
    assert mail.refused == 1 and "451" in output, "the first attempt was not refused"
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

    # The step once more in the same DAG run: it finds the same facts, already told, and sends nothing.
    run_id = re.search(r"DagRun Finished: dag_id=train_model, .*?run_id=([^,\s]+),", output).group(1)
    again = run_airflow(env, "tasks", "test", "train_model", "notify", run_id)
    again_output = again.stdout + again.stderr
    assert again.returncode == 0, again_output[-6000:]
    assert "no pending alerts" in again_output, again_output[-6000:]
    mail.wait_for(2, timeout=2)
    assert len(mail.messages) == 1
    with db.session_factory(url)() as session:
        assert session.scalar(select(db.func.count()).select_from(db.Alert)) == len(alerts)


@pytest.mark.slow
def test_the_dag_emails_a_rejected_candidate_once(tmp_path, airflow_home, kafka_bootstrap, mail):
    """Week 1 (version 1, champion), week 2 with flipped labels (version 2), week 3: the gate rejects version 2 in
    the third DAG run, whose notify step e-mails it; a retry of that step sends nothing."""
    topic, state = unique("rejected"), tmp_path / "state"
    env = airflow_env(airflow_home, kafka_bootstrap, {
        "RETRAIN_STATE_DIR": str(state), "RETRAIN_TOPIC": topic, "RETRAIN_CONSUMER_GROUP": unique("g"),
        "RETRAIN_STREAM_TIMEOUT_S": "3", "RETRAIN_ACCURACY_FLOOR": "0", "RETRAIN_ALERT_EMAIL_TO": RECIPIENTS,
        "AIRFLOW_CONN_SMTP_DEFAULT": mail.connection_json,
    })
    settings = settings_from_env({k: v for k, v in env.items() if k.startswith(("RETRAIN_", "KAFKA_"))})
    for week, flip, day in ((1, False, "2026-01-12"), (2, True, "2026-01-19"), (3, False, "2026-01-26")):
        assert ingest_files(week_files(tmp_path / "landing", week, flip=flip), settings=settings).rows > 0
        result = run_airflow(env, "dags", "test", "train_model", day, "-c", '{"mode": "replay"}')
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "state=success" in output, output[-6000:]
    registry = Registry(settings)
    assert registry.get("default", 2).status == "rejected" and registry.champion_version("default") == 1
    mail.wait_for(1)
    rejected = [(m, b) for m, b in zip(mail.messages, mail.bodies()) if "candidate rejected" in m["Subject"]]
    assert len(rejected) == 1, [m["Subject"] for m in mail.messages]
    assert "candidate version 2 rejected" in rejected[0][1]
    sent = len(mail.messages)
    run_id = re.search(r"DagRun Finished: dag_id=train_model, .*?run_id=([^,\s]+),", output).group(1)
    retry = run_airflow(env, "tasks", "test", "train_model", "notify", run_id)
    assert retry.returncode == 0 and "no pending alerts" in retry.stdout + retry.stderr, retry.stderr[-6000:]
    mail.wait_for(sent + 1, timeout=2)
    assert len(mail.messages) == sent
    assert pending_alerts(registry, "default") == []


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
    with pytest.raises(RuntimeError, match="through the Airflow SMTP connection 'smtp_default' failed"):
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
    assert pending_alerts(registry, "default") == []
    assert "nobody was e-mailed" in caplog.text + capfd.readouterr().out  # Airflow's logging may print it
    mail.wait_for(1, timeout=1)
    assert mail.messages == []


def test_a_missing_smtp_connection_fails_with_its_name(registry, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    monkeypatch.setenv("RETRAIN_ALERT_EMAIL_TO", RECIPIENTS)
    monkeypatch.setenv("RETRAIN_SMTP_CONN_ID", unique("smtp_nowhere"))
    record_alert(registry, "default", "drift", "drift:p0:0", "drift detected")
    with pytest.raises(RuntimeError, match="SMTP connection 'smtp_nowhere-.*' failed"):
        notify_dag_run("default", "train_model", "manual__none", [EmailDigestNotifier()], registry=registry)
    assert len(pending_alerts(registry, "default")) == 1
