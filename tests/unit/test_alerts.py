"""Alerts: collected once per fact from a run's history, delivered as one digest, marked, never sent twice.

A real SQLite history (tests/history.py) and a recording notifier (the e-mail notifier against a real SMTP server
is tested in tests/integration/test_alerts_e2e.py).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from include.history import db
from include.lifecycle.alerts import (
    DIGEST_KEY,
    NOBODY,
    build_digest,
    collect_run_alerts,
    deliver_pending,
    notify_dag_run,
    pending_alerts,
    record_alert,
    run_ids_of_dag_run,
)
from include.lifecycle.registry import Registry
from include.settings import settings_from_env
from tests.history import write_history


class Recorder:
    """A notifier that keeps what it was given (and can be told to fail)."""

    def __init__(self, fail: bool = False):
        self.digests, self.fail = [], fail
        self.last_delivery = "recorder"

    def __call__(self, context):
        if self.fail:
            raise ConnectionRefusedError("SMTP server down")
        self.digests.append(context[DIGEST_KEY])


@pytest.fixture
def registry(tmp_path):
    settings = settings_from_env({"RETRAIN_STATE_DIR": str(tmp_path), "RETRAIN_ACCURACY_FLOOR": "0.95"})
    history = write_history(settings.db_url, run_batches=(30, 40), drift_every=25, baseline=False)
    registry = Registry(settings)
    registry.history = history
    return registry


def _alerts(registry):
    with registry.sessions() as s:
        return list(s.scalars(select(db.Alert).order_by(db.Alert.id)))


def test_drift_and_floor_alerts_of_a_dag_run_are_recorded_once(registry):
    run = registry.history.runs[1]
    run_ids = run_ids_of_dag_run(registry, "train_model", run["dag_run_id"])
    assert run_ids == [run["run_id"]]
    recorded = collect_run_alerts(registry, "default", run_ids, accuracy_floor=0.95)
    drift_seqs = [s for s in registry.history.drift_seqs if s >= run["seq_from"]]
    assert len(drift_seqs) == 1
    assert recorded == [f"drift:p0:{s}" for s in drift_seqs] + [f"accuracy_below_floor:{run['run_id']}"]
    assert collect_run_alerts(registry, "default", run_ids, accuracy_floor=0.95) == []  # a retry: nothing new
    kinds = [a.kind for a in _alerts(registry)]
    assert kinds == ["drift", "accuracy_below_floor"]
    floor = _alerts(registry)[-1]
    assert "under the floor 0.950" in floor.message and floor.details["floor"] == 0.95


def test_no_floor_means_no_floor_alert(registry):
    run_ids = [registry.history.runs[0]["run_id"]]
    recorded = collect_run_alerts(registry, "default", run_ids, accuracy_floor=None)
    assert recorded and all(k.startswith("drift:") for k in recorded)
    assert collect_run_alerts(registry, "default", [], accuracy_floor=0.9) == []


def test_pending_alerts_go_out_as_one_digest_then_never_again(registry):
    record_alert(registry, "default", "candidate_rejected", "rejected:2", "candidate 2: 0.81 vs champion 0.90",
                 version=2)
    record_alert(registry, "default", "drift", "drift:p0:100", "drift <script>", version=None)
    record_alert(registry, "other", "drift", "drift:p0:100", "another model's", version=None)
    notifier = Recorder()
    delivery = deliver_pending(registry, "default", [notifier], context={"dag": None})
    assert delivery.alerts == 2 and delivery.notified_by == "recorder"
    (digest,) = notifier.digests
    assert [a["kind"] for a in digest.alerts] == ["candidate_rejected", "drift"]
    assert "2 alerts" in digest.subject and "1 candidate rejected" in digest.subject
    assert "candidate 2: 0.81 vs champion 0.90" in digest.text
    assert "&lt;script&gt;" in digest.html and "<script>" not in digest.html
    assert deliver_pending(registry, "default", [notifier]).alerts == 0  # a retry sends nothing
    assert len(notifier.digests) == 1
    marked = {a.alert_key: (a.notified_at is not None, a.notified_by) for a in _alerts(registry)
              if a.model_name == "default"}
    assert marked == {"rejected:2": (True, "recorder"), "drift:p0:100": (True, "recorder")}
    assert [a.model_name for a in pending_alerts(registry, "other")] == ["other"]


def test_a_failed_send_leaves_the_alerts_pending_and_raises(registry):
    record_alert(registry, "default", "drift", "drift:p0:5", "drift")
    with pytest.raises(ConnectionRefusedError):
        deliver_pending(registry, "default", [Recorder(), Recorder(fail=True)])
    assert len(pending_alerts(registry, "default")) == 1
    retry = Recorder()
    assert deliver_pending(registry, "default", [retry]).alerts == 1 and len(retry.digests) == 1


def test_without_notifiers_alerts_are_marked_as_told_to_nobody(registry, caplog):
    record_alert(registry, "default", "drift", "drift:p0:5", "drift")
    assert deliver_pending(registry, "default", []).notified_by == NOBODY
    assert "not sent to anyone" in caplog.text
    assert pending_alerts(registry, "default") == []


def test_the_notify_step_records_and_delivers(registry):
    notifier = Recorder()
    run = registry.history.runs[0]
    result = notify_dag_run("default", "train_model", run["dag_run_id"], [notifier], registry=registry)
    assert result["delivered"] == len(result["recorded"]) > 0 and len(notifier.digests) == 1
    again = notify_dag_run("default", "train_model", run["dag_run_id"], [notifier], registry=registry)
    assert again == {"recorded": [], "delivered": 0, "notified_by": None}


def test_record_alert_refuses_unknown_kinds(registry):
    with pytest.raises(ValueError, match="unknown alert kind"):
        record_alert(registry, "default", "weather", "k", "m")
    assert build_digest("m", []).alerts == []


def test_the_email_notifier_refuses_to_run_without_a_digest():
    from include.lifecycle.notifiers import EmailDigestNotifier, parse_recipients

    with pytest.raises(ValueError, match="ALERT_NOTIFIERS"):
        EmailDigestNotifier(to="a@example.com").notify({})
    assert parse_recipients("a@x, b@y;c@z ") == ["a@x", "b@y", "c@z"]
    assert parse_recipients(["a@x", " "]) == ["a@x"] and parse_recipients(None) == []
