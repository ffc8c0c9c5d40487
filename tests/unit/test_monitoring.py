"""Tests for include.monitoring, the Model accuracy plugin's API and the report CLI.

A real SQLite history database holds generated runs (tests/history.py); the plugin app is driven with
FastAPI's TestClient. Authorization is overridden for the API tests; the anonymous tests run without any
override, so they exercise Airflow's own ``get_user`` dependency.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from include import monitoring
from include.monitoring.report import runs_markdown
from include.settings import Settings
from tests.history import EVENT_T0_MS, write_history
from tests.support import PROJECT

sys.path.insert(0, str(PROJECT / "plugins"))

BIG_ROWS = 100_000


# ---------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    root = tmp_path_factory.mktemp("history")
    return write_history(f"sqlite:///{root / 'history.db'}", run_batches=(400, 500, 600), landing=root / "landing",
                         drift_every=300)


@pytest.fixture(scope="module")
def big_history(tmp_path_factory):
    root = tmp_path_factory.mktemp("big_history")
    return write_history(f"sqlite:///{root / 'history.db'}", run_batches=(30_000, 30_000, 40_000), drift_every=5000)


@pytest.fixture(scope="module")
def sessions(history):
    return monitoring.sessions_for(history.url)


@pytest.fixture(scope="module")
def plugin():
    from model_accuracy import app as app_module

    return app_module


@pytest.fixture
def client(plugin, history, monkeypatch):
    """A client of the plugin app on the small history, with authorization granted."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("RETRAIN_DB_URL", history.url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_DEFAULT", json.dumps({"conn_type": "kafka", "extra": {"bootstrap.servers": "127.0.0.1:1"}}))
    plugin.app.dependency_overrides[plugin.authorize] = lambda: None
    try:
        yield TestClient(plugin.app)
    finally:
        plugin.app.dependency_overrides.clear()


@pytest.fixture
def anonymous(plugin):
    from fastapi.testclient import TestClient

    assert not plugin.app.dependency_overrides
    return TestClient(plugin.app)


# ---------------------------------------------------------------------------------------------------------
# Downsampling


def _lttb_reference(x, y, n_out):
    """The textbook LTTB loop (Steinarsson 2013), for comparison."""
    n = len(x)
    every = (n - 2) / (n_out - 2)
    out, a = [0], 0
    for i in range(n_out - 2):
        lo, hi = int(np.floor(i * every)) + 1, int(np.floor((i + 1) * every)) + 1
        nlo, nhi = hi, min(int(np.floor((i + 2) * every)) + 1, n)
        avg_x, avg_y = np.mean(x[nlo:nhi]), np.mean(y[nlo:nhi])
        areas = [abs((x[a] - avg_x) * (y[j] - y[a]) - (x[a] - x[j]) * (avg_y - y[a])) for j in range(lo, hi)]
        a = lo + int(np.argmax(areas))
        out.append(a)
    out.append(n - 1)
    return np.array(out)


@pytest.mark.parametrize("n, n_out", [(1000, 50), (5000, 2000), (2001, 2000), (10, 3), (777, 101)])
def test_lttb_matches_the_reference_algorithm(n, n_out):
    rng = np.random.default_rng(n)
    x = np.sort(rng.uniform(0, 1e6, n))
    y = rng.normal(0.8, 0.05, n)
    got = monitoring.lttb_indices(x, y, n_out)
    assert len(got) == n_out
    assert got[0] == 0 and got[-1] == n - 1
    assert np.all(np.diff(got) > 0)
    np.testing.assert_array_equal(got, _lttb_reference(x, y, n_out))


@pytest.mark.parametrize("n, n_out", [(0, 10), (1, 10), (5, 10), (10, 10)])
def test_lttb_keeps_everything_when_small(n, n_out):
    x = np.arange(n, dtype=float)
    np.testing.assert_array_equal(monitoring.lttb_indices(x, x, n_out), np.arange(n))


def test_lttb_keeps_a_spike():
    x = np.arange(100_000, dtype=float)
    y = np.full(100_000, 0.8)
    y[54_321] = 0.2
    assert 54_321 in monitoring.lttb_indices(x, y, 200)


def test_downsample_keeps_requested_points_within_the_bound():
    x = np.arange(50_000, dtype=float)
    y = np.sin(x / 500)
    keep = np.array([0, 12_345, 12_346, 30_000, 49_999])
    chosen = monitoring.downsample(x, y, 2000, keep)
    assert len(chosen) <= 2000
    assert set(keep) <= set(chosen.tolist())
    too_many = np.arange(0, 50_000, 10)  # more than half the budget: ignored, bound still holds
    assert len(monitoring.downsample(x, y, 2000, too_many)) <= 2000


# ---------------------------------------------------------------------------------------------------------
# Queries


def test_accuracy_curve_joins_the_runs_into_one_curve(sessions, history):
    curve = monitoring.accuracy_curve(sessions, topic="drone-observations")
    assert curve["total_batches"] == history.batches == 1500
    assert [r["run_id"] for r in curve["runs"]] == [r["run_id"] for r in history.runs]
    assert [r["batches"] for r in curve["runs"]] == [400, 500, 600]
    assert [r["dag_run_id"] for r in curve["runs"]] == [r["dag_run_id"] for r in history.runs]
    for name in monitoring.SERIES:
        s = curve["series"][name]
        assert len(s["x"]) == len(s["y"]) == len(s["run"]) == 1500  # below the bound: nothing dropped
        assert s["x"] == sorted(s["x"])
        assert s["run"] == sorted(s["run"])  # one stretch per run, in order
        assert all(0 < v < 1 for v in s["y"])
    assert curve["runs"][1]["x_min"] == history.runs[1]["seq_from"]
    assert curve["baseline"]["accuracy"] == pytest.approx(history.baseline_accuracy)
    assert curve["bayes_accuracy"] == pytest.approx(history.bayes_accuracy)
    assert [d["seq"] for d in curve["drift_events"]] == history.drift_seqs
    assert all(d["detector"] == "adwin" for d in curve["drift_events"])


def test_accuracy_curve_of_one_dag_run_is_its_slice(sessions, history):
    run = history.runs[1]
    curve = monitoring.accuracy_curve(sessions, dag_id=history.dag_id, dag_run_id=run["dag_run_id"])
    assert [r["run_id"] for r in curve["runs"]] == [run["run_id"]]
    xs = curve["series"]["window_accuracy"]["x"]
    assert len(xs) == run["batches"] and xs[0] == run["seq_from"] and xs[-1] == run["seq_to"]
    assert all(run["seq_from"] <= d["seq"] <= run["seq_to"] for d in curve["drift_events"])
    assert curve["filter"] == {"dag_id": history.dag_id, "dag_run_id": run["dag_run_id"]}
    nothing = monitoring.accuracy_curve(sessions, dag_run_id="manual__no_such_run")
    assert nothing["total_batches"] == 0 and nothing["runs"] == [] and nothing["series"]["window_accuracy"]["x"] == []


def test_accuracy_curve_over_event_time(sessions):
    curve = monitoring.accuracy_curve(sessions, x_axis="event_time")
    xs = curve["series"]["prequential_accuracy"]["x"]
    assert xs == sorted(xs) and xs[0] >= EVENT_T0_MS
    assert curve["drift_events"] and all(d["x"] >= EVENT_T0_MS for d in curve["drift_events"])


def test_accuracy_curve_of_an_unknown_model_is_empty(sessions):
    curve = monitoring.accuracy_curve(sessions, model_name="nobody")
    assert curve["total_batches"] == 0 and curve["runs"] == [] and curve["drift_events"] == []


def test_bayes_accuracy_is_omitted_unless_every_sidecar_is_readable(tmp_path):
    landing = tmp_path / "landing"
    history = write_history(f"sqlite:///{tmp_path / 'h.db'}", run_batches=(5, 5), landing=landing, baseline=False)
    sessions = monitoring.sessions_for(history.url)
    with sessions() as session:
        assert monitoring.bayes_accuracy(session, "drone-observations") == pytest.approx(history.bayes_accuracy)
        assert monitoring.bayes_accuracy(session, "other-topic") is None
        (landing / history.files[0].name.replace(".csv", ".meta.json")).unlink()
        assert monitoring.bayes_accuracy(session, "drone-observations") is None
    curve = monitoring.accuracy_curve(sessions, topic="drone-observations")
    assert curve["bayes_accuracy"] is None and curve["baseline"] is None


def test_downsampling_100k_batches_is_bounded_and_fast(big_history):
    sessions = monitoring.sessions_for(big_history.url)
    monitoring.accuracy_curve(sessions)  # warm up: migrations check, first connection
    started = time.perf_counter()
    curve = monitoring.accuracy_curve(sessions, max_points=2000)
    elapsed = time.perf_counter() - started
    assert curve["total_batches"] == BIG_ROWS
    for s in curve["series"].values():
        assert 1900 <= len(s["x"]) <= 2000
        assert s["x"] == sorted(s["x"])
        assert set(s["run"]) == {0, 1, 2}  # every run is still on the chart
    # The first and the last mini-batch of every run are kept, so the runs join without gaps.
    xs = set(curve["series"]["window_accuracy"]["x"])
    for run in big_history.runs:
        assert {run["seq_from"], run["seq_to"]} <= xs
    assert len(json.dumps(curve)) < 250_000
    assert elapsed < 5.0, f"accuracy_curve over {BIG_ROWS} rows took {elapsed:.2f}s"


def test_list_runs_newest_first_with_rates_offsets_and_checkpoints(sessions, history):
    page = monitoring.list_runs(sessions, limit=2)
    assert page["total"] == 4 and len(page["runs"]) == 2
    newest = page["runs"][0]
    assert newest["run_id"] == history.runs[-1]["run_id"]
    assert newest["duration_s"] == pytest.approx(20 + 600 / 10)
    assert newest["records"] == 600 * 100
    assert newest["records_per_s"] == pytest.approx(60_000 / 80, rel=1e-3)
    assert newest["offsets_from"] == f"p0:{history.runs[-1]['seq_from']}"
    assert newest["checkpoint_id"].startswith("ckpt002")
    assert newest["started_at"].endswith("+00:00")
    rest = monitoring.list_runs(sessions, limit=2, offset=2)["runs"]
    assert [r["kind"] for r in rest] == ["incremental", "batch_baseline"]
    one = monitoring.list_runs(sessions, dag_run_id=history.runs[0]["dag_run_id"])
    assert [r["run_id"] for r in one["runs"]] == [history.runs[0]["run_id"]]


def test_ingest_ledger_counts_rows_and_quarantine(sessions):
    ledger = monitoring.ingest_ledger(sessions, topic="drone-observations")
    assert ledger["totals"] == {"files": 3, "rows_valid": 150_000, "rows_bad": 3, "quarantined": 3}
    assert [f["file"] for f in ledger["files"]] == [f"observations_2026-01-0{d}.csv" for d in (7, 6, 5)]
    assert [f["quarantined"] for f in ledger["files"]] == [2, 1, 0]
    assert all(f["status"] == "committed" for f in ledger["files"])


@pytest.mark.parametrize("offsets, text", [
    ({}, ""), (None, ""), ({"0": 5}, "p0:5"), ({"10": 1, "2": 7, "0": 3}, "p0:3 p2:7 p10:1"),
])
def test_format_offsets(offsets, text):
    assert monitoring.format_offsets(offsets) == text


def test_runs_markdown_escapes_cells(sessions):
    runs = monitoring.list_runs(sessions)["runs"]
    runs[0] = {**runs[0], "stop_reason": "a|b"}
    lines = runs_markdown(runs).splitlines()
    assert lines[0].startswith("| DAG run |") and len(lines) == 2 + len(runs)
    assert "a\\|b" in lines[2]


def test_kafka_status_is_unavailable_quickly_when_no_broker_listens():
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1")
    started = time.monotonic()
    status = monitoring.kafka_status(settings, timeout=1.0, config={"bootstrap.servers": "127.0.0.1:1"})
    assert time.monotonic() - started < 2.5
    assert status["available"] is False and status["error"]
    assert status["partitions"] == [] and status["dead_letters"] is None


# ---------------------------------------------------------------------------------------------------------
# The plugin's API


def test_every_route_depends_on_airflow_authorization(plugin):
    from fastapi.routing import APIRoute

    routes = [r for r in plugin.app.routes]
    assert routes and all(isinstance(r, APIRoute) for r in routes), "a mount or plain route would skip the dependency"
    for route in routes:
        assert any(d.dependency is plugin.authorize for d in route.dependencies), route.path


ANONYMOUS_PATHS = ["/", "/static/chart.umd.min.js", "/static/model_accuracy.js", "/static/icon.svg", "/api/models",
                   "/api/accuracy", "/api/runs", "/api/ingest", "/api/kafka", "/static/nope.js",
                   "/api/accuracy?max_points=1"]


@pytest.mark.parametrize("path", ANONYMOUS_PATHS)
def test_anonymous_requests_are_refused(anonymous, path):
    response = anonymous.get(path)
    assert response.status_code == 401, response.text
    assert "Chart.js" not in response.text and "total_batches" not in response.text


def test_docs_and_openapi_are_not_served(anonymous):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert anonymous.get(path).status_code == 404


def test_api_serves_the_history(client, history):
    models = client.get("/api/models").json()["models"]
    assert models == [{"model_name": "default", "batches": 1500}]
    curve = client.get("/api/accuracy", params={"max_points": 500}).json()
    assert curve["total_batches"] == 1500 and len(curve["runs"]) == 3
    assert all(len(s["x"]) <= 500 for s in curve["series"].values())
    assert curve["bayes_accuracy"] == pytest.approx(history.bayes_accuracy)
    run = history.runs[2]
    sliced = client.get("/api/accuracy", params={"dag_id": history.dag_id, "dag_run_id": run["dag_run_id"]}).json()
    assert [r["run_id"] for r in sliced["runs"]] == [run["run_id"]]
    runs = client.get("/api/runs", params={"limit": 3, "offset": 1}).json()
    assert runs["total"] == 4 and len(runs["runs"]) == 3
    ledger = client.get("/api/ingest").json()
    assert ledger["totals"]["files"] == 3


def test_api_reports_kafka_unavailable_within_the_timeout(client):
    started = time.monotonic()
    body = client.get("/api/kafka").json()
    assert time.monotonic() - started < monitoring.KAFKA_TIMEOUT_S + 2
    assert body["available"] is False and body["error"]


def test_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert 'src="static/chart.umd.min.js"' in page.text
    chart = client.get("/static/chart.umd.min.js")
    assert chart.status_code == 200 and chart.headers["content-type"].startswith("text/javascript")
    assert chart.content == (PROJECT / "plugins/model_accuracy/static/chart.umd.min.js").read_bytes()
    assert (PROJECT / "plugins/model_accuracy/static/chart.js.LICENSE.md").read_text().startswith("The MIT License")
    for bad in ("/static/nope.js", "/static/..%2Fapp.py", "/static/%2E%2E%2Fapp.py", "/static/index.html"):
        assert client.get(bad).status_code == 404, bad


@pytest.mark.parametrize("path, params", [
    ("/api/accuracy", {"max_points": 5}),
    ("/api/accuracy", {"max_points": 100_000}),
    ("/api/accuracy", {"max_points": "many"}),
    ("/api/accuracy", {"x": "wallclock"}),
    ("/api/accuracy", {"model": ""}),
    ("/api/accuracy", {"model": "m" * 129}),
    ("/api/accuracy", {"dag_id": "no spaces"}),
    ("/api/accuracy", {"dag_id": "x' OR '1'='1"}),
    ("/api/accuracy", {"dag_run_id": "bad\x00id"}),
    ("/api/accuracy", {"dag_run_id": "r" * 251}),
    ("/api/runs", {"limit": 0}),
    ("/api/runs", {"limit": 1001}),
    ("/api/runs", {"offset": -1}),
    ("/api/runs", {"dag_run_id": ""}),
    ("/api/ingest", {"limit": "all"}),
])
def test_bad_parameters_are_rejected(client, path, params):
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text


def test_sql_looking_values_are_just_values(client):
    response = client.get("/api/runs", params={"dag_run_id": "x' OR '1'='1", "model": "default'; DROP TABLE training_runs;--"})
    assert response.status_code == 200 and response.json()["total"] == 0
    assert client.get("/api/runs").json()["total"] == 4


# ---------------------------------------------------------------------------------------------------------
# The report CLI


def test_report_cli_writes_png_and_markdown(history, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "include", "report", "--out", str(out), "--db-url", history.url],
        cwd=PROJECT, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 1000 and height >= 500
    markdown = (out / "runs.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert table[0].startswith("| DAG run | kind | start | duration (s) | records | records/s |")
    assert len(table) == 2 + 4
    assert history.runs[0]["dag_run_id"] in markdown and "batch_baseline" in markdown


def test_report_cli_validates_arguments(tmp_path):
    result = subprocess.run([sys.executable, "-m", "include", "report", "--out", str(tmp_path), "--max-points", "1"],
                            cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--max-points" in result.stderr
