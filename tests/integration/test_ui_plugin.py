"""The Model accuracy plugin in a real Airflow API server, seen by a real browser and by anonymous clients.

The API server runs with the project's environment, the simple auth manager and a test user; the history
database holds generated runs and the Kafka topic holds messages with a known consumer lag. Headless Chromium
(driven over the Chrome DevTools Protocol) logs in through Airflow's login form, opens the page from
Airflow's navigation, waits for the chart and checks what it shows; screenshots go to test-artifacts/.
Anonymous and forged-token requests to every plugin route are checked with httpx.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
import pytest

from tests import ui_support
from tests.history import write_history
from tests.support import PROJECT, airflow_env, create_topic, run_airflow, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = PROJECT / "test-artifacts"
USER, PASSWORD = "monitor", "pw-" + unique("x")
PLUGIN_PATHS = ["/model-accuracy/", "/model-accuracy/static/chart.umd.min.js", "/model-accuracy/static/model_accuracy.js",
                "/model-accuracy/static/lifecycle.js",
                "/model-accuracy/static/model_accuracy.css", "/model-accuracy/static/icon.svg",
                "/model-accuracy/api/models", "/model-accuracy/api/accuracy", "/model-accuracy/api/runs",
                "/model-accuracy/api/ingest", "/model-accuracy/api/kafka",
                "/model-accuracy/api/accuracy?dag_id=train_model&dag_run_id=x", "/model-accuracy/api/versions",
                "/model-accuracy/api/alerts"]
RUN_BATCHES = (400, 500, 600)


# ---------------------------------------------------------------------------------------------------------
# Fixtures: Kafka data with a known lag, history, the API server


@pytest.fixture(scope="module")
def kafka_state(kafka_bootstrap):
    """A topic with 2 partitions (10 + 6 messages), a group that committed offset 4 on partition 0 only,
    and 3 dead letters: lag 6 + 6 = 12."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic, group = unique("ui-topic"), unique("ui-group")
    base = {"bootstrap.servers": kafka_bootstrap}
    create_topic(kafka_bootstrap, topic, partitions=2)
    create_topic(kafka_bootstrap, f"{topic}.dlq")
    producer = Producer(base)
    for i in range(10):
        producer.produce(topic, b"m%d" % i, partition=0)
    for i in range(6):
        producer.produce(topic, b"m%d" % i, partition=1)
    for i in range(3):
        producer.produce(f"{topic}.dlq", b"dead%d" % i, partition=0)
    assert producer.flush(30) == 0
    consumer = Consumer({**base, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    finally:
        consumer.close()
    return {"topic": topic, "group": group, "lag": 12, "dead_letters": 3}


@pytest.fixture(scope="module")
def history(tmp_path_factory, kafka_state):
    root = tmp_path_factory.mktemp("ui_history")
    return write_history(f"sqlite:///{root / 'history.db'}", run_batches=RUN_BATCHES, landing=root / "landing",
                         drift_every=300, topic=kafka_state["topic"])


@pytest.fixture(scope="module")
def api_server(airflow_home, kafka_bootstrap, history, kafka_state, tmp_path_factory):
    """``airflow api-server`` on a free port with a test user; yields its base URL."""
    with ui_support.api_server(airflow_home, kafka_bootstrap, tmp_path_factory.mktemp("api_server"),
                               {USER: ("viewer", PASSWORD)},
                               {"RETRAIN_DB_URL": history.url, "RETRAIN_TOPIC": kafka_state["topic"],
                                "RETRAIN_CONSUMER_GROUP": kafka_state["group"]}) as url:
        yield url


@pytest.fixture(scope="module")
def token(api_server) -> str:
    return ui_support.token_for(api_server, USER, PASSWORD)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with ui_support.chromium(tmp_path_factory.mktemp("chromium-profile")) as chrome:
        yield chrome


# ---------------------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("path", PLUGIN_PATHS)
def test_anonymous_and_forged_requests_are_refused(api_server, path):
    assert httpx.get(api_server + path, timeout=30).status_code == 401
    forged = httpx.get(api_server + path, headers={"Authorization": "Bearer not-a-jwt"}, timeout=30)
    assert forged.status_code in (401, 403)
    cookie = httpx.get(api_server + path, cookies={"_token": "eyJhbGciOiJIUzUxMiJ9.e30.c2ln"}, timeout=30)
    assert cookie.status_code in (401, 403)


def test_a_logged_in_user_gets_the_api(api_server, token, history, kafka_state):
    headers = {"Authorization": f"Bearer {token}"}
    for path in PLUGIN_PATHS:
        assert httpx.get(api_server + path, headers=headers, timeout=30).status_code == 200, path
    curve = httpx.get(f"{api_server}/model-accuracy/api/accuracy", headers=headers, timeout=30).json()
    assert curve["total_batches"] == sum(RUN_BATCHES) and len(curve["runs"]) == len(RUN_BATCHES)
    assert curve["bayes_accuracy"] == pytest.approx(history.bayes_accuracy)
    started = time.monotonic()
    kafka = httpx.get(f"{api_server}/model-accuracy/api/kafka", headers=headers, timeout=30).json()
    assert time.monotonic() - started < 3.5
    assert kafka["available"] is True, kafka
    assert kafka["total_lag"] == kafka_state["lag"]
    assert [(p["partition"], p["committed"], p["lag"]) for p in kafka["partitions"]] == [(0, 4, 6), (1, None, 6)]
    assert kafka["dead_letters"] == kafka_state["dead_letters"]
    bad = httpx.get(f"{api_server}/model-accuracy/api/accuracy", params={"max_points": 0}, headers=headers, timeout=30)
    assert bad.status_code == 422


def test_airflow_lists_the_views_in_navigation_and_on_dag_runs(api_server, token):
    plugins = httpx.get(f"{api_server}/api/v2/plugins", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
    ours = next(p for p in plugins["plugins"] if p["name"] == "model_accuracy")
    views = {v["destination"]: v for v in ours["external_views"]}
    assert views["nav"]["href"] == "model-accuracy/"
    assert views["dag_run"]["href"] == "model-accuracy/?dag_id={DAG_ID}&dag_run_id={RUN_ID}"
    assert [a["url_prefix"] for a in ours["fastapi_apps"]] == ["/model-accuracy"]


def test_browser_logs_in_and_sees_the_chart(api_server, browser, history, kafka_state):
    ui_support.log_in(browser, api_server, USER, PASSWORD, "/plugin/model-accuracy")
    # The page is embedded by Airflow's UI in an iframe (same origin), reached from its navigation.
    frame = "document.querySelector('iframe[src*=\"model-accuracy/\"]')"
    state = browser.wait_for(
        f"(() => {{ const f = {frame}; const s = f && f.contentWindow && f.contentWindow.modelAccuracy;"
        " return s && s.ready && s.rendered ? JSON.parse(JSON.stringify({points: s.points, runs: s.runs,"
        " rendered: s.rendered, total: s.totalBatches, drift: s.driftEvents, error: s.error})) : null; })()",
        timeout=90, what="the chart inside Airflow's UI",
    )
    total = sum(RUN_BATCHES)
    assert state["error"] is None
    assert state["points"] == {"window_accuracy": total, "prequential_accuracy": total}
    assert state["rendered"] == 2 * total
    assert state["runs"] == len(RUN_BATCHES) and state["total"] == total
    assert state["drift"] == len(history.drift_seqs)
    assert browser.evaluate("!!document.querySelector('a[href$=\"plugin/model-accuracy\"]')"), "no navigation entry"
    inner = f"{frame}.contentDocument"
    browser.wait_for(f"{inner}.querySelector('#kafka dl') !== null", what="the consumer-lag card")
    assert f"total lag{kafka_state['lag']}" in browser.evaluate(f"{inner}.querySelector('#kafka').innerText").replace("\n", "")
    browser.wait_for(f"{inner}.querySelectorAll('#runs tbody tr').length === 4", what="the runs table")
    # Links back to Airflow's runs open in the top window.
    links = browser.evaluate(
        f"[...{inner}.querySelectorAll('#runs a[target=_top]')].map(a => new URL(a.href).pathname)")
    assert {f"/dags/{history.dag_id}/runs/{r['dag_run_id'].replace('+', '%2B').replace(':', '%3A')}"
            for r in history.runs} <= set(links)
    ARTIFACTS.mkdir(exist_ok=True)
    time.sleep(0.5)  # let the lag card and fonts settle before the picture
    browser.screenshot(ARTIFACTS / "model_accuracy_in_airflow.png")


def test_browser_sees_one_dag_runs_slice(api_server, browser, history):
    run = history.runs[1]
    query = httpx.QueryParams({"dag_id": history.dag_id, "dag_run_id": run["dag_run_id"]})
    browser.goto(f"{api_server}/model-accuracy/?{query}")
    state = browser.wait_for(
        "(() => { const s = window.modelAccuracy; return s && s.ready && s.rendered ?"
        " JSON.parse(JSON.stringify({points: s.points, runs: s.runs, error: s.error})) : null; })()",
        timeout=60, what="the DAG run's slice",
    )
    assert state == {"points": {"window_accuracy": run["batches"], "prequential_accuracy": run["batches"]},
                     "runs": 1, "error": None}
    assert run["dag_run_id"] in browser.evaluate("document.getElementById('filter').innerText")
    assert browser.evaluate("document.querySelectorAll('#runs tbody tr').length") == 1
    browser.wait_for("!!document.querySelector('#kafka dl')", what="the consumer-lag card")
    browser.screenshot(ARTIFACTS / "model_accuracy_dag_run.png", full_page=True)


@pytest.fixture(scope="module")
def dag_run(api_server, airflow_home, kafka_bootstrap):
    """A (queued) run of the project's stack_check DAG in Airflow's metadata database."""
    env = airflow_env(airflow_home, kafka_bootstrap)
    result = run_airflow(env, "dags", "reserialize")
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = unique("manual__ui")
    result = run_airflow(env, "dags", "trigger", "stack_check", "--run-id", run_id)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return "stack_check", run_id


def test_a_dag_run_in_airflow_links_to_its_slice(api_server, browser, dag_run):
    dag_id, run_id = dag_run
    browser.goto(f"{api_server}/dags/{dag_id}/runs/{quote(run_id, safe='')}/plugin/model-accuracy-run")
    frame = "document.querySelector('iframe[src*=\"model-accuracy/\"]')"
    browser.wait_for(f"(() => {{ const f = {frame}; return f && f.contentWindow && f.contentWindow.modelAccuracy"
                     " && f.contentWindow.modelAccuracy.ready; })()", timeout=90, what="the DAG run's tab")
    search = browser.evaluate(f"{frame}.contentWindow.location.search")
    assert dict(httpx.QueryParams(search.lstrip("?"))) == {"dag_id": dag_id, "dag_run_id": run_id}
    text = browser.evaluate(f"{frame}.contentDocument.body.innerText")
    assert f"Showing DAG run {run_id} of {dag_id}" in text
    assert "No training history for this DAG run." in text  # stack_check trains nothing
    browser.screenshot(ARTIFACTS / "model_accuracy_dag_run_tab.png")


def test_full_page_screenshot(api_server, browser):
    browser.goto(f"{api_server}/model-accuracy/")
    browser.wait_for("window.modelAccuracy && window.modelAccuracy.ready && !!document.querySelector('#kafka dl')",
                     what="the page")
    path = browser.screenshot(ARTIFACTS / "model_accuracy_page.png", full_page=True)
    assert path.stat().st_size > 30_000
