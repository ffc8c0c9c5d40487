"""The Model accuracy plugin's lifecycle routes and the monitoring queries behind them, with FastAPI's TestClient.

A real SQLite history with version rows written directly (their folders hold an empty ``model.keras``: these tests
switch pointers, they never load a model; tests/integration/test_ui_lifecycle.py uses real exported versions in a
real Airflow API server). Authorization is overridden with a fixed user; the checks against forged requests run
unchanged.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from include import monitoring
from include.history import db
from include.settings import settings_from_env
from tests.history import T0, write_history
from tests.support import PROJECT

sys.path.insert(0, str(PROJECT / "plugins"))

GATE = {"candidate_accuracy": 0.81, "champion_accuracy": 0.9, "rows": 1000, "mcnemar_b": 10, "mcnemar_c": 99,
        "mcnemar_p": 1e-6, "champion_version": 1, "evaluated_on_version": 3, "tolerance": 0.005, "floor": None}


def write_versions(url: str, models_dir, model_name: str = "default") -> None:
    """Versions 1 (champion), 2 (rejected by the gate), 3 (candidate), with their audit rows and two alerts."""
    now = db.utcnow() - timedelta(minutes=1)  # before what the tests do
    rows, events = [], []
    for version, status in ((1, "champion"), (2, "rejected"), (3, "candidate")):
        folder = models_dir / model_name / str(version)
        folder.mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"")
        rows.append({"model_name": model_name, "version": version, "checkpoint_id": f"ckpt{version}",
                     "run_id": f"run{version - 1:03d}" + "0" * 26, "schema_id": "drone-v1", "topic": "t",
                     "offsets": {"0": version * 40_000}, "records_total": version * 40_000,
                     "event_time_min": None, "event_time_max": None, "path": str(folder), "metrics": {"window_accuracy": 0.8 + version / 100},
                     "status": status, "gate": GATE if version == 2 else None,
                     "reason": {1: "the first version", 2: "candidate 0.81 vs champion 0.90: below", 3: None}[version],
                     "created_at": now + timedelta(seconds=version), "decided_at": now if version < 3 else None})
        events.append({"model_name": model_name, "event_key": f"registered:{version}", "version": version,
                       "action": "registered", "actor": "system", "reason": "r", "created_at": now + timedelta(seconds=version)})
    events.append({"model_name": model_name, "event_key": "promoted:1:first", "version": 1, "action": "promoted",
                   "actor": "system", "reason": "first", "created_at": now + timedelta(seconds=1, milliseconds=5)})
    events.append({"model_name": model_name, "event_key": "rejected:2", "version": 2, "action": "rejected",
                   "actor": "gate", "reason": "below", "created_at": now + timedelta(seconds=3, milliseconds=5)})
    with db.get_engine(url).begin() as connection:
        connection.execute(insert(db.ModelVersion), rows)
        connection.execute(insert(db.ModelEvent), events)
        connection.execute(insert(db.ModelPointer), [{"model_name": model_name, "champion_version": 1,
                                                       "previous_version": None, "changed_by": "system",
                                                       "reason": "first", "changed_at": now}])
        connection.execute(insert(db.Alert), [
            {"model_name": model_name, "alert_key": "rejected:2", "kind": "candidate_rejected", "version": 2,
             "message": "candidate 2 rejected", "created_at": T0, "notified_at": T0, "notified_by": "email to a@b"},
            {"model_name": model_name, "alert_key": "drift:p0:1", "kind": "drift", "version": None,
             "message": "drift", "created_at": T0 + timedelta(hours=1), "notified_at": None, "notified_by": None},
        ])


@pytest.fixture
def history(tmp_path):
    settings = settings_from_env({"RETRAIN_STATE_DIR": str(tmp_path)})
    write_history(settings.db_url, run_batches=(400, 400, 400), baseline=False)
    write_versions(settings.db_url, settings.models_dir)
    return settings


@pytest.fixture
def client(history, monkeypatch):
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from model_accuracy import app as app_module
    from model_accuracy import lifecycle_api

    monkeypatch.setenv("RETRAIN_STATE_DIR", str(history.state_dir))
    monkeypatch.setattr(lifecycle_api, "_can_edit", lambda user: True)
    overrides = app_module.app.dependency_overrides
    overrides[app_module.authorize] = lambda: None
    overrides[lifecycle_api.may_edit_training] = lambda: None
    overrides[get_user] = lambda: SimpleAuthManagerUser(username="alice", role="admin")
    try:
        yield TestClient(app_module.app, base_url="http://airflow.test")
    finally:
        overrides.clear()


SAME_SITE = {"X-Requested-By": "test", "Origin": "http://airflow.test", "Sec-Fetch-Site": "same-origin"}


def test_versions_show_the_champion_the_decisions_and_who(client):
    data = client.get("/api/versions").json()
    assert data["champion"] == 1 and data["total"] == 3 and data["can_edit"] is True
    assert [(v["version"], v["status"], v["champion"]) for v in data["versions"]] == [
        (3, "candidate", False), (2, "rejected", False), (1, "champion", True)]
    rejected = data["versions"][1]
    assert rejected["decided_by"] == "gate" and rejected["gate"]["candidate_accuracy"] == 0.81
    assert rejected["gate"]["mcnemar_p"] == 1e-6 and "below" in rejected["reason"]
    assert [e["action"] for e in data["events"]][:2] == ["rejected", "promoted"]


def test_alerts_newest_first_with_pending_count(client):
    data = client.get("/api/alerts").json()
    assert [a["kind"] for a in data["alerts"]] == ["drift", "candidate_rejected"]
    assert data["pending"] == 1 and data["alerts"][1]["notified_by"] == "email to a@b"


def test_chart_overlays_mark_promotions_and_the_two_accuracies(client):
    curve = client.get("/api/accuracy").json()
    assert [(p["version"], p["action"], p["x"]) for p in curve["promotions"]] == [(1, "promoted", 39_900)]
    lines = curve["version_accuracy"]
    assert lines["champion"] == {"version": 1, "status": "champion", "accuracy": 0.81,
                                 "source": "window accuracy at registration"}
    assert lines["candidate"]["version"] == 3 and lines["candidate"]["accuracy"] == pytest.approx(0.83)


def test_promote_and_rollback_record_the_user_and_the_reason(client, history):
    response = client.post("/api/models/default/promote", json={"version": 3, "reason": "looks better"},
                           headers=SAME_SITE)
    assert response.status_code == 200, response.text
    assert response.json() == {"model_name": "default", "champion": 3, "actor": "alice"}
    response = client.post("/api/models/default/rollback", json={"reason": "customers complained"},
                           headers=SAME_SITE)
    assert response.json()["champion"] == 1
    with db.session_factory(history.db_url)() as session:
        events = session.scalars(select(db.ModelEvent).where(db.ModelEvent.actor == "alice")
                                 .order_by(db.ModelEvent.id)).all()
    assert [(e.action, e.version, e.reason) for e in events] == [
        ("promoted", 3, "looks better"), ("rolled_back", 1, "customers complained")]
    curve = client.get("/api/accuracy").json()
    assert [p["action"] for p in curve["promotions"]] == ["promoted", "promoted", "rolled_back"]


def test_a_lifecycle_error_is_a_409_with_the_reason(client):
    response = client.post("/api/models/default/rollback", json={"reason": "nothing before"}, headers=SAME_SITE)
    assert response.status_code == 409 and "no earlier champion" in response.json()["detail"]
    response = client.post("/api/models/default/promote", json={"version": 9, "reason": "typo"}, headers=SAME_SITE)
    assert response.status_code == 409 and "no version 9" in response.json()["detail"]


@pytest.mark.parametrize("headers, why", [
    ({"Origin": "http://airflow.test"}, "X-Requested-By"),
    ({"X-Requested-By": "x", "Origin": "https://evil.example"}, "another site (Origin)"),
    ({"X-Requested-By": "x", "Sec-Fetch-Site": "cross-site"}, "another site (Sec-Fetch-Site)"),
    ({"X-Requested-By": "x", "Sec-Fetch-Site": "same-site"}, "another site (Sec-Fetch-Site)"),
    ({"X-Requested-By": "x"}, "without Origin"),
])
def test_forgeable_requests_are_refused(client, headers, why):
    response = client.post("/api/models/default/promote", json={"version": 3, "reason": "forged"}, headers=headers)
    assert response.status_code == 403 and why in response.json()["detail"]
    assert client.get("/api/versions").json()["champion"] == 1


def test_a_bad_body_is_a_422(client):
    for body in ({"version": 0, "reason": "zero"}, {"version": 3, "reason": ""}, {"version": 3, "reason": "a\nb"}):
        assert client.post("/api/models/default/promote", json=body, headers=SAME_SITE).status_code == 422


def test_monitoring_views_of_an_unknown_model_are_empty(history):
    sessions = monitoring.sessions_for(history.db_url)
    assert monitoring.versions_view(sessions, "nope")["versions"] == []
    assert monitoring.alerts_view(sessions, "nope")["total"] == 0


def test_anonymous_requests_are_refused(history, monkeypatch):
    from fastapi.testclient import TestClient

    from model_accuracy import app as app_module

    assert not app_module.app.dependency_overrides
    monkeypatch.setenv("RETRAIN_STATE_DIR", str(history.state_dir))
    anonymous = TestClient(app_module.app, base_url="http://airflow.test")
    assert anonymous.get("/api/versions").status_code == 401
    assert anonymous.get("/api/alerts").status_code == 401
    for action, body in (("promote", {"version": 3, "reason": "anonymous"}), ("rollback", {"reason": "anonymous"})):
        assert anonymous.post(f"/api/models/default/{action}", json=body, headers=SAME_SITE).status_code == 401
    with db.session_factory(history.db_url)() as session:
        assert session.get(db.ModelPointer, "default").champion_version == 1


def test_generations_show_the_live_one_the_rebuilds_and_both_curves(client, history):
    from include.lifecycle.generations import switch
    from include.rebuild import records

    sessions = db.session_factory(history.db_url)
    data = client.get("/api/generations").json()
    assert (data["live"], data["served_by"], data["rebuilds"], data["curves"]) == (1, "default", [], None)
    assert [(g["generation"], g["status"], g["lineage"]) for g in data["generations"]] == [(1, "live", "default")]

    rebuild, _ = records.request(sessions, history.topic, "default", reason="an older week landed", actor="ingest")
    with db.get_engine(history.db_url).begin() as connection:  # the rebuild's lineage has trained 30 mini-batches
        run_id = connection.execute(select(db.TrainingRun.run_id).limit(1)).scalar_one()
        connection.execute(insert(db.BatchMetric), [
            {"model_name": "default.g2", "batch_key": f"p0:{100 * i}", "run_id": run_id, "seq": 100 * i,
             "batch_index": i, "offsets_from": {"0": 100 * i}, "offsets_to": {"0": 100 * i + 100}, "n": 100,
             "n_train": 80, "n_eval": 20, "window_accuracy": 0.8, "prequential_accuracy": 0.8,
             "event_time_min": 1_767_571_200_000 + 3_600_000 * i, "event_time_max": 1_767_571_200_000 + 3_600_000 * i}
            for i in range(30)])
    write_versions(history.db_url, history.models_dir, model_name="default.g2")
    records.update(sessions, rebuild.id, state="training", files_planned=28, files_ingested=28, rows_ingested=13440,
                   records_trained=9000)
    data = client.get("/api/generations?model=default").json()
    (shown,) = data["rebuilds"]
    assert (shown["state"], shown["files_ingested"], shown["files_planned"], shown["records_trained"]) == (
        "training", 28, 28, 9000)
    assert data["curves"]["rebuild"]["lineage"] == "default.g2" and data["curves"]["live"]["lineage"] == "default"
    assert data["curves"]["rebuild"]["x"] and data["curves"]["live"]["x"]

    switch(sessions, history.topic, 2, "default", actor="gate", reason="rebuild 1 passed the gate",
           champion_version=3, rebuild_id=rebuild.id, gate=GATE)
    data = client.get("/api/generations").json()
    assert (data["live"], data["served_by"], data["served_version"]) == (2, "default.g2", 3)
    assert data["pointer"]["previous"] == 1 and data["pointer"]["changed_by"] == "gate"
    assert [(g["generation"], g["status"], g["lineage"], g["champion"]) for g in data["generations"]] == [
        (1, "standby", "default", 1), (2, "live", "default.g2", 3)]
    assert data["rebuilds"][0]["state"] == "switched" and data["rebuilds"][0]["gate"]["candidate_accuracy"] == 0.81
    assert data["curves"]["live"]["lineage"] == "default"  # once live, the rebuild is drawn beside the one it replaced
