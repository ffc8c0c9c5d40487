"""The model lifecycle on the Model accuracy page, in a real Airflow API server, seen by headless Chromium.

Three real versions (exported Keras models, registered with include.lifecycle.versions) over a generated history:
version 1 the champion, version 2 rejected by the gate (with its alert, already e-mailed), version 3 a candidate, and
a pending drift alert. An admin logs in through Airflow's login form, sees the versions table with the champion
marked, the alerts and the promotion marker, then promotes version 3 and rolls back with a reason, by clicking;
each change is recorded with the admin's name and reason. A viewer may read but gets 403 on the actions, and
requests without the X-Requested-By header or from another origin are refused.
"""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import select

from include.history import db
from include.lifecycle.alerts import deliver_pending, record_alert
from include.lifecycle.promotion import reject
from include.lifecycle.registry import Registry
from include.settings import settings_from_env
from tests import ui_support
from tests.history import write_history
from tests.support import PROJECT, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = PROJECT / "test-artifacts"
ADMIN, VIEWER = ("boss", "pw-" + unique("a")), ("watcher", "pw-" + unique("v"))
GATE = {"candidate_accuracy": 0.612, "champion_accuracy": 0.884, "rows": 672, "mcnemar_b": 12, "mcnemar_c": 195,
        "mcnemar_p": 2.1e-40, "champion_version": 1, "evaluated_on_version": 3, "tolerance": 0.005, "floor": None}


def _tiny_model():
    import keras

    inputs = keras.Input(shape=(3,), name="x")
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    """The history database and version folders of a model with three versions and two alerts; its settings."""
    from include.lifecycle.versions import VersionSource, register_version

    root = tmp_path_factory.mktemp("ui_lifecycle")
    settings = settings_from_env({"RETRAIN_STATE_DIR": str(root)})
    history = write_history(settings.db_url, run_batches=(300, 300, 300), baseline=False)
    registry = Registry(settings)
    for index, run in enumerate(history.runs):
        source = VersionSource(checkpoint_id=f"ckpt{index}", run_id=run["run_id"], schema_id="drone-v1", topic="t",
                               offsets={"0": run["seq_to"] + 100}, records_total=run["seq_to"] + 100,
                               metrics={"window_accuracy": 0.85 + index / 100})
        assert register_version(registry, "default", _tiny_model(), source).version == index + 1
    message = "model default: candidate version 2 rejected: accuracy 0.6120 vs champion version 1 0.8840"
    record_alert(registry, "default", "candidate_rejected", "rejected:2", message, version=2, details=GATE)
    reject(registry, "default", 2, actor="gate", reason="candidate 0.6120 vs champion 0.8840 on 672 rows: more "
           "than 0.0050 below the champion", gate=GATE)
    deliver_pending(registry, "default", [])  # told to nobody: shown as notified, by nobody
    record_alert(registry, "default", "drift", "drift:p0:45000", "drift detected by ewma at 45,000 records")
    return settings


@pytest.fixture(scope="module")
def api_server(airflow_home, kafka_bootstrap, lifecycle, tmp_path_factory):
    users = {ADMIN[0]: ("admin", ADMIN[1]), VIEWER[0]: ("viewer", VIEWER[1])}
    with ui_support.api_server(airflow_home, kafka_bootstrap, tmp_path_factory.mktemp("api_server"), users,
                               {"RETRAIN_STATE_DIR": str(lifecycle.state_dir)}) as url:
        yield url


def _champion(settings) -> int:
    return Registry(settings, migrate=False).champion_version("default")


def _events_by(settings, actor: str) -> list[tuple[str, int, str]]:
    with db.session_factory(settings.db_url, migrate=False)() as session:
        rows = session.scalars(select(db.ModelEvent).where(db.ModelEvent.actor == actor).order_by(db.ModelEvent.id))
        return [(e.action, e.version, e.reason) for e in rows]


def test_a_viewer_reads_the_versions_but_may_not_change_them(api_server, lifecycle):
    headers = {"Authorization": f"Bearer {ui_support.token_for(api_server, *VIEWER)}", "X-Requested-By": "test"}
    versions = httpx.get(f"{api_server}/model-accuracy/api/versions", headers=headers, timeout=30).json()
    assert versions["can_edit"] is False and versions["champion"] == 1
    for action, body in (("promote", {"version": 3, "reason": "I want it"}), ("rollback", {"reason": "undo"})):
        response = httpx.post(f"{api_server}/model-accuracy/api/models/default/{action}", json=body,
                              headers=headers, timeout=30)
        assert response.status_code == 403, response.text
    assert _champion(lifecycle) == 1 and _events_by(lifecycle, VIEWER[0]) == []


@pytest.mark.parametrize("headers, why", [
    ({}, "X-Requested-By"),
    ({"X-Requested-By": "x", "Origin": "https://evil.example"}, "another site (Origin)"),
    ({"X-Requested-By": "x", "Sec-Fetch-Site": "cross-site"}, "another site (Sec-Fetch-Site)"),
])
def test_forgeable_requests_are_refused_even_for_an_admin(api_server, lifecycle, headers, why):
    token = ui_support.token_for(api_server, *ADMIN)
    response = httpx.post(f"{api_server}/model-accuracy/api/models/default/promote",
                          json={"version": 3, "reason": "forged"},
                          headers={"Authorization": f"Bearer {token}", **headers}, timeout=30)
    assert response.status_code == 403 and why in response.json()["detail"], response.text
    # A session cookie alone (what a forged cross-site request would carry) is not enough without Origin.
    response = httpx.post(f"{api_server}/model-accuracy/api/models/default/promote",
                          json={"version": 3, "reason": "forged"}, cookies={"_token": token},
                          headers={"X-Requested-By": "x"}, timeout=30)
    assert response.status_code == 403 and "without Origin" in response.json()["detail"]
    assert _champion(lifecycle) == 1


def _page_state(browser):
    return browser.evaluate("JSON.parse(JSON.stringify({versions: window.modelAccuracy.versions, alerts: "
                            "window.modelAccuracy.alerts, promotions: window.modelAccuracy.promotions, lines: "
                            "window.modelAccuracy.versionLines, last: window.modelAccuracy.lastAction}))")


def test_an_admin_promotes_and_rolls_back_from_the_page(api_server, lifecycle, tmp_path_factory):
    with ui_support.chromium(tmp_path_factory.mktemp("chromium-profile")) as browser:
        ui_support.log_in(browser, api_server, *ADMIN, "/plugin/model-accuracy")
        browser.goto(f"{api_server}/model-accuracy/")
        browser.wait_for("window.modelAccuracy && window.modelAccuracy.ready && window.modelAccuracy.versions",
                         timeout=60, what="the versions")
        state = _page_state(browser)
        assert state["versions"]["canEdit"] is True and state["versions"]["champion"] == 1
        assert [(r["version"], r["status"], r["champion"]) for r in state["versions"]["rows"]] == [
            (3, "candidate", False), (2, "rejected", False), (1, "champion", True)]
        assert state["versions"]["rows"][1]["decidedBy"] == "gate"
        assert browser.evaluate("document.querySelector('#versions tr.is-champion').dataset.version") == "1"
        assert "champion" in browser.evaluate("document.querySelector('#versions tr.is-champion .badge').innerText")
        assert state["alerts"] == [{"kind": "drift", "notified": False}, {"kind": "candidate_rejected", "notified": True}]
        text = browser.evaluate("document.getElementById('alerts').innerText")
        assert "pending" in text and "candidate version 2 rejected" in text and "nobody" in text
        assert "0.6120" in browser.evaluate("document.getElementById('versions').innerText")
        assert state["promotions"] == 1 and state["lines"]["champion"]["version"] == 1
        assert state["lines"]["candidate"]["version"] == 3
        assert browser.evaluate("document.querySelectorAll('#versions button.promote').length") == 2
        ARTIFACTS.mkdir(exist_ok=True)
        browser.screenshot(ARTIFACTS / "model_accuracy_lifecycle.png", full_page=True)

        browser.type_into("#reason", "v3 did better on last week's rows")
        browser.evaluate("document.querySelector('#versions button.promote[data-version=\"3\"]').click()")
        browser.wait_for("window.modelAccuracy.versions && window.modelAccuracy.versions.champion === 3",
                         what="version 3 to be the champion")
        assert _champion(lifecycle) == 3
        assert browser.evaluate("document.querySelector('#versions tr.is-champion').dataset.version") == "3"
        browser.wait_for("window.modelAccuracy.ready && window.modelAccuracy.promotions === 2",
                         what="the promotion marker on the chart")

        browser.type_into("#reason", "customers complained about v3")
        browser.evaluate("document.getElementById('rollback').click()")
        browser.wait_for("window.modelAccuracy.versions && window.modelAccuracy.versions.champion === 1",
                         what="the rollback to version 1")
        last = _page_state(browser)["last"]
        assert (last["action"], last["status"], last["data"]["actor"]) == ("rollback", 200, ADMIN[0])
        time.sleep(0.3)
        browser.screenshot(ARTIFACTS / "model_accuracy_lifecycle_rolled_back.png", full_page=True)
    assert _champion(lifecycle) == 1
    assert _events_by(lifecycle, ADMIN[0]) == [("promoted", 3, "v3 did better on last week's rows"),
                                               ("rolled_back", 1, "customers complained about v3")]


def test_a_viewer_sees_the_versions_without_buttons(api_server, tmp_path_factory):
    with ui_support.chromium(tmp_path_factory.mktemp("chromium-viewer")) as browser:
        ui_support.log_in(browser, api_server, *VIEWER, "/plugin/model-accuracy")
        browser.goto(f"{api_server}/model-accuracy/")
        browser.wait_for("window.modelAccuracy && window.modelAccuracy.ready && window.modelAccuracy.versions",
                         timeout=60, what="the versions")
        assert _page_state(browser)["versions"]["canEdit"] is False
        assert browser.evaluate("document.querySelectorAll('#versions button.promote').length") == 0
        assert browser.evaluate("document.getElementById('actions').hidden") is True
        assert "need permission to edit the train_model DAG" in browser.evaluate(
            "document.getElementById('actions-denied').innerText")
        assert browser.evaluate("document.querySelectorAll('#versions tbody tr').length") == 3
