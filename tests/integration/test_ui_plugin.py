"""The Model accuracy plugin in a real Airflow API server, seen by a real browser and by anonymous clients.

The API server runs with the project's environment, the simple auth manager and a test user; the history
database holds generated runs and the Kafka topic holds messages with a known consumer lag. Headless Chromium
(driven over the Chrome DevTools Protocol) logs in through Airflow's login form, opens the page from
Airflow's navigation, waits for the chart and checks what it shows; screenshots go to test-artifacts/.
Anonymous and forged-token requests to every plugin route are checked with httpx.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.history import write_history
from tests.support import PROJECT, airflow_env, create_topic, run_airflow, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = PROJECT / "test-artifacts"
USER, PASSWORD = "monitor", "pw-" + unique("x")
PLUGIN_PATHS = ["/model-accuracy/", "/model-accuracy/static/chart.umd.min.js", "/model-accuracy/static/model_accuracy.js",
                "/model-accuracy/static/model_accuracy.css", "/model-accuracy/static/icon.svg",
                "/model-accuracy/api/models", "/model-accuracy/api/accuracy", "/model-accuracy/api/runs",
                "/model-accuracy/api/ingest", "/model-accuracy/api/kafka",
                "/model-accuracy/api/accuracy?dag_id=train_model&dag_run_id=x"]
RUN_BATCHES = (400, 500, 600)


# ---------------------------------------------------------------------------------------------------------
# Chromium over the DevTools protocol


def chromium_binary() -> str | None:
    """Chromium's path; installs the Debian packages (scripts/system_deps.sh) when it is missing."""
    names = ("chromium", "chromium-browser", "google-chrome")
    found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    if found is None:
        subprocess.run(["bash", str(PROJECT / "scripts" / "system_deps.sh")], capture_output=True, timeout=900)
        found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    return found


class Browser:
    """Just enough of a CDP client: navigate, evaluate, type, screenshot."""

    def __init__(self, binary: str, profile: Path, width: int = 1440, height: int = 1000):
        import websocket  # websocket-client

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.console: list[str] = []

    def send(self, method: str, **params):
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(message["params"]["exceptionDetails"])[:500])
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str = ""):
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or expression}; page errors: {self.console[-3:]}")
            time.sleep(0.25)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        time.sleep(0.2)
        self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    def type_into(self, selector: str, text: str) -> None:
        self.wait_for(f"!!document.querySelector({json.dumps(selector)})", what=selector)
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        params: dict = {"format": "png"}
        if full_page:
            width, height = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


# ---------------------------------------------------------------------------------------------------------
# Fixtures: Kafka data with a known lag, history, the API server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    root = tmp_path_factory.mktemp("api_server")
    passwords = root / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    port = _free_port()
    env = airflow_env(airflow_home, kafka_bootstrap, {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "RETRAIN_DB_URL": history.url,
        "RETRAIN_TOPIC": kafka_state["topic"],
        "RETRAIN_CONSUMER_GROUP": kafka_state["group"],
    })
    log_path = root / "api-server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(Path(env["PATH"].split(os.pathsep)[0]) / "airflow"), "api-server", "--port", str(port),
             "--host", "127.0.0.1"],
            env=env, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("api-server did not start:\n" + log_path.read_text()[-5000:])
            time.sleep(1)
        yield url
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def token(api_server) -> str:
    response = httpx.post(f"{api_server}/auth/token", json={"username": USER, "password": PASSWORD}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("Chromium is not installed and scripts/system_deps.sh could not install it")
    chrome = Browser(binary, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chrome
    finally:
        chrome.close()


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
    browser.goto(f"{api_server}/auth/login?next=/plugin/model-accuracy")
    browser.type_into("input[name=username]", USER)
    browser.type_into("input[name=password]", PASSWORD)
    browser.evaluate("document.querySelector('button[type=submit]').click()")
    browser.wait_for("location.pathname.endsWith('/plugin/model-accuracy')", what="redirect after login")
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
