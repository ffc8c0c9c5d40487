"""Rebuilds end to end with the real scheduler, the real broker and a real HTTP scorer (one Airflow stack for the
module, as tests/integration/test_backfill_e2e.py starts it; its scenarios run in order).

Three weeks are live (ingested and trained, one run each; a Thursday of week 3 and a Wednesday of week 4 were
"missed"). Then:

1. The week before them lands and the ingest DAG runs: the files wait for a rebuild, `rebuild_model` fills
   generation 2 with four weeks in time order (every row once), trains its lineage, the gate passes it and the switch
   happens while `python -m include serve` answers requests: none fails, and the answers move to the new lineage.
2. The missed Thursday lands with every label flipped (and ten times the rows): the rebuild of generation 3 learns a
   worse model, the gate rejects it with its reason and an alert; the live generation is unchanged.
3. `airflow backfill create` over a range with the missed Wednesday (older than the newest data) and two new days
   after it works in one go: the Wednesday waits and starts the rebuild of generation 4, the new days go into the
   live generation (and the standby generation 1), and generation 4 takes everything in date order (its training
   and decision are not waited for).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from include.demo.generate import generate_range
from include.demo.main_job import INGEST_DAG, TRAIN_DAG, _airflow, backfill, list_runs, wait_until_idle
from include.history import db
from include.ingest.interval import ingest_files
from include.ingest.ledger import WAITING, Ledger
from include.lifecycle.generations import Generations
from include.lifecycle.registry import Registry
from include.rebuild import records
from include.settings import settings_from_env
from tests.support import PROJECT, process_env, read_topic, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REBUILD_DAG = "rebuild_model"
DAGS = (INGEST_DAG, TRAIN_DAG, REBUILD_DAG)
WEEK1 = date(2026, 1, 5)  # a Monday: weeks 1..5 of the stream
SHOPS = 20  # 480 rows a day
PORT = int(os.environ.get("TEST_KAFKA_PORT", "19092")) + 81  # the module's own ports beside its broker's
MISSED_THURSDAY = WEEK1 + timedelta(weeks=2, days=3)  # in week 3
MISSED_WEDNESDAY = WEEK1 + timedelta(weeks=3, days=2)  # in week 4


def _days(landing: Path, first: date, last: date, *, shops: int = SHOPS) -> list[Path]:
    return generate_range(first, last, landing, seed=5, shops=shops, noise=0.05)


def _airflow_sh(command: str) -> None:
    done = subprocess.run([str(PROJECT / "scripts" / "airflow.sh"), command], capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _trigger(dag_id: str) -> None:
    for attempt in range(10):  # Airflow's SQLite metadata DB may refuse a writer beside the scheduler: try again
        done = _airflow("dags", "trigger", dag_id, check=False)
        if done.returncode == 0:
            return
        time.sleep(2 + attempt)
    raise AssertionError(done.stdout[-2000:] + done.stderr[-2000:])


class Traffic:
    """Requests to the HTTP scorer, back to back in a thread; what each got."""

    def __init__(self, url: str, instance: dict) -> None:
        self.url, self.instance, self.answers = url, instance, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(self.url, json={"instances": [self.instance]})
                    self.answers.append((r.status_code, r.headers.get("X-Model-Lineage"),
                                         r.headers.get("X-Model-Version")))
                except httpx.HTTPError as exc:
                    self.answers.append((0, str(exc), None))
                time.sleep(0.05)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, kafka_bootstrap):
    """Three weeks live, Airflow standalone running, the HTTP scorer serving; (settings, landing, scorer url)."""
    from include.lifecycle import gate
    from include.training.trainer import TrainOptions, train

    tmp = tmp_path_factory.mktemp("rebuild_e2e")
    landing = tmp / "landing"
    topic = unique("reb-e2e")
    env = {
        "AIRFLOW_HOME": str(tmp / "airflow"), "AIRFLOW__API__PORT": str(PORT),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(PORT + 1),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(PORT + 2),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "RETRAIN_STATE_DIR": str(tmp / "state"),
        "RETRAIN_LANDING_DIR": str(landing), "RETRAIN_TOPIC": topic, "RETRAIN_CONSUMER_GROUP": f"g-{topic}",
        "RETRAIN_STREAM_TIMEOUT_S": "3", "RETRAIN_SERVE_PORT": str(PORT + 3),
        "AIRFLOW_CONN_KAFKA_DEFAULT": '{"conn_type": "kafka", "extra": {"bootstrap.servers": "%s"}}' % kafka_bootstrap,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.setenv("PATH", f"{PROJECT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
        for line in subprocess.run(["bash", "-c", f"source {PROJECT}/infra/airflow/env.sh && env"],
                                   capture_output=True, text=True, check=True).stdout.splitlines():
            key, _, value = line.partition("=")
            if key.startswith("AIRFLOW") or key in ("PYTHONPATH", "PATH"):
                patch.setenv(key, value)
        settings = settings_from_env(dict(os.environ))
        migrate = subprocess.Popen(["airflow", "db", "migrate"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        # Three weeks live (weeks 2, 3, 4 of the stream), one training run and one version each.
        missed = (f"observations_{MISSED_THURSDAY}.csv", f"observations_{MISSED_WEDNESDAY}.csv")
        weeks = [_days(landing, WEEK1 + timedelta(weeks=w), WEEK1 + timedelta(weeks=w, days=6)) for w in (1, 2, 3)]
        for path in sum(weeks, []):
            if path.name in missed:
                path.unlink()  # missed on their days: they turn up later
        for paths in weeks:
            paths = [p for p in paths if p.name not in missed]
            assert ingest_files(paths, settings=settings).rows == len(paths) * 480
            assert train(settings, TrainOptions(mode="replay")).version is not None
            gate.evaluate(Registry(settings), "default")  # as train_model's evaluate step does
        assert migrate.wait(400) == 0, migrate.stdout.read()[-3000:]
        serve = subprocess.Popen([sys.executable, "-m", "include", "serve"], env=process_env(env), cwd=PROJECT,
                                 stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "w"))
        _airflow_sh("start")
        try:
            _airflow("dags", "reserialize")
            for dag_id in DAGS:
                _airflow("dags", "unpause", dag_id)
            url = f"http://127.0.0.1:{PORT + 3}/v1/models/default:predict"
            yield settings, landing, url
        finally:
            _airflow_sh("stop")
            serve.terminate()
            serve.wait(30)


def _g_rows(bootstrap: str, topic: str) -> list[tuple[str, int]]:
    out = []
    for m in read_topic(bootstrap, topic):
        headers = dict(m.headers())
        out.append((headers["source_file"].decode().rsplit("/", 1)[-1], int(headers["line"])))
    return out


def _wait_served(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, json={"instances": [INSTANCE]}, timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError("the HTTP scorer did not answer")


INSTANCE = {"observed_at": "2026-02-01T13:00:00Z", "shop_id": 7, "shop_type": "grocery", "x": 3, "y": 4}


def test_an_older_week_is_rebuilt_into_generation_2_and_switched_while_serving(stack, kafka_bootstrap):
    settings, landing, url = stack
    sessions = db.session_factory(settings.db_url)
    _wait_served(url)
    week1 = _days(landing, WEEK1, WEEK1 + timedelta(days=6))
    with Traffic(url, INSTANCE) as traffic:
        _trigger(INGEST_DAG)  # a manual run: every dated file; the ledger skips the ingested ones
        wait_until_idle(DAGS, timeout_s=900, settle_s=10)
        time.sleep(2)  # the scorer follows the pointer within ~0.5 s
    # Every file of week 1 waited, and rebuild 1 made generation 2 live.
    assert {f.file_date for f in Ledger(sessions, settings.topic).files(WAITING)} == {d.isoformat() for d in
                                                                                      _dates(week1)}
    (rebuild,) = records.all_of(sessions, settings.topic)
    assert (rebuild.state, rebuild.decision, rebuild.generation) == ("switched", "switch", 2), rebuild
    assert rebuild.gate["candidate_model"] == "default.g2" and rebuild.gate["champion_model"] == "default"
    assert rebuild.gate["rows"] >= 200
    generations = Generations(sessions, settings.topic)
    assert [(g.generation, g.status) for g in generations.all()] == [(1, "standby"), (2, "live")]
    assert Registry(settings).served("default") == ("default.g2", rebuild.candidate_version)
    # Generation 2: four weeks (less the two missed days) in time order, every row once.
    rows = _g_rows(kafka_bootstrap, f"{settings.topic}.g2")
    assert len(rows) == len(set(rows)) == (4 * 7 - 2) * 480
    assert [name for name, _ in rows] == sorted(name for name, _ in rows)
    assert rows[0][0] == f"observations_{WEEK1}.csv"
    # Serving never stopped: every request answered, first by generation 1's champion, then by generation 2's.
    statuses = {status for status, _, _ in traffic.answers}
    lineages = [lineage for _, lineage, _ in traffic.answers]
    assert statuses == {200}, [a for a in traffic.answers if a[0] != 200][:5]
    assert lineages[0] == "default" and lineages[-1] == "default.g2", lineages[::50]
    assert all(r["state"] == "success" for dag in DAGS for r in list_runs(dag)), [
        (dag, r["state"]) for dag in DAGS for r in list_runs(dag)]


def _dates(paths: list[Path]) -> list[date]:
    return [date.fromisoformat(p.name[len("observations_"):-len(".csv")]) for p in paths]


def test_a_worse_rebuild_is_rejected_and_the_live_generation_is_unchanged(stack, kafka_bootstrap):
    settings, landing, url = stack
    sessions = db.session_factory(settings.db_url)
    # The missed Thursday turns up with every label flipped (a broken labelling job) and ten times the rows.
    (path,) = _days(landing / "flipped-source", MISSED_THURSDAY, MISSED_THURSDAY, shops=10 * SHOPS)
    header, *lines = path.read_text().splitlines()
    (landing / path.name).write_text("\n".join([header] + [f"{r[:-1]}{1 - int(r[-1])}" for r in lines]) + "\n")
    live_before = Registry(settings).served("default")
    _trigger(INGEST_DAG)
    wait_until_idle(DAGS, timeout_s=900, settle_s=10)
    rebuild = records.all_of(sessions, settings.topic)[0]
    assert (rebuild.generation, rebuild.state, rebuild.decision) == (3, "rejected", "reject"), rebuild
    gate = rebuild.gate
    assert gate["candidate_accuracy"] < gate["champion_accuracy"] - gate["tolerance"], gate
    assert "the gate rejected it" in rebuild.decision_reason and "below the champion" in rebuild.decision_reason
    assert Registry(settings).served("default") == live_before  # the live generation and its champion, unchanged
    assert Generations(sessions, settings.topic).live() == 2
    assert [(g.generation, g.status) for g in Generations(sessions, settings.topic).all()][-1] == (3, "rejected")
    with sessions() as session:
        alert = session.query(db.Alert).filter_by(kind="rebuild_rejected").one()
    assert alert.model_name == "default.g2" and f"rebuild {rebuild.id}" in alert.message
    # Generation 3 held the flipped day in its place: after Wednesday of week 3, before Friday.
    names = [name for name, _ in _g_rows(kafka_bootstrap, f"{settings.topic}.g3")]
    assert names == sorted(names) and names.count(f"observations_{MISSED_THURSDAY}.csv") == 4800


def test_the_page_shows_the_generations_the_rebuilds_and_the_switch(stack, tmp_path_factory):
    from tests import ui_support

    api = f"http://127.0.0.1:{PORT}"
    password = json.loads(Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())["admin"]
    with ui_support.chromium(tmp_path_factory.mktemp("chromium-rebuild")) as browser:
        ui_support.log_in(browser, api, "admin", password, "/plugin/model-accuracy")
        browser.goto(f"{api}/model-accuracy/?model=default")
        browser.wait_for("window.modelAccuracy && window.modelAccuracy.ready && window.modelAccuracy.generations",
                         timeout=90, what="the generations")
        shown = browser.evaluate("JSON.parse(JSON.stringify(window.modelAccuracy.generations))")
        assert (shown["live"], shown["servedBy"]) == (2, "default.g2")
        assert [(g["generation"], g["status"], g["lineage"]) for g in shown["rows"]] == [
            (1, "standby", "default"), (2, "live", "default.g2"), (3, "rejected", "default.g3")]
        assert [(r["generation"], r["state"]) for r in shown["rebuilds"]] == [(3, "rejected"), (2, "switched")]
        switched = shown["rebuilds"][1]
        assert switched["filesIngested"] == switched["filesPlanned"] == 4 * 7 - 2 and switched["recordsTrained"] > 0
        assert shown["curves"]["live"] > 10 and shown["curves"]["rebuild"] > 10  # both curves are drawn
        text = browser.evaluate("document.getElementById('generations-card').innerText")
        assert "Live generation 2" in text and "the gate rejected it" in text and "rebuild 1 passed the gate" in text
        browser.screenshot(PROJECT / "test-artifacts" / "model_accuracy_generations.png", full_page=True)


def test_a_backfill_over_older_and_newer_days_works_in_one_go(stack, kafka_bootstrap):
    settings, landing, url = stack
    sessions = db.session_factory(settings.db_url)
    newest = WEEK1 + timedelta(weeks=3, days=6)  # the last day of week 4
    new_days = _days(landing, newest + timedelta(days=1), newest + timedelta(days=2))
    _days(landing, MISSED_WEDNESDAY, MISSED_WEDNESDAY)
    _airflow_sh("stop")  # SQLite metadata DB: create the backfill with the scheduler stopped (as `make run` does)
    backfill(MISSED_WEDNESDAY, newest + timedelta(days=2))
    _airflow_sh("start")
    live, g4 = f"{settings.topic}.g2", f"{settings.topic}.g4"
    expected = {f"observations_{MISSED_WEDNESDAY}.csv", f"observations_{MISSED_THURSDAY}.csv", new_days[-1].name}

    def done() -> bool:  # the seven runs, and generation 4 filled with the new days (its training is not waited for)
        runs = [r for r in list_runs(INGEST_DAG) if r["run_id"].startswith("backfill__")]
        filled = {Path(f.file_name).name for f in Ledger(sessions, g4).files("committed")}
        return len(runs) == 7 and all(r["state"] in ("success", "failed") for r in runs) and expected <= filled

    deadline = time.monotonic() + 900
    while not done():
        assert time.monotonic() < deadline, "the backfill or the rebuild's fill did not finish"
        time.sleep(5)
    runs = [r for r in list_runs(INGEST_DAG) if r["run_id"].startswith("backfill__")]
    assert len(runs) == 7 and all(r["state"] == "success" for r in runs), runs
    # The Wednesday waits in the live ledger and started rebuild 3 (generation 4); the new days are live.
    ledger = Ledger(sessions, live)
    assert [f.file_date for f in ledger.files(WAITING)] == [MISSED_THURSDAY.isoformat(), MISSED_WEDNESDAY.isoformat()]
    assert {f.file_date for f in ledger.files("committed")} >= {d.isoformat() for d in _dates(new_days)}
    rebuild = records.all_of(sessions, settings.topic)[0]
    assert rebuild.generation == 4 and rebuild.id == 3, rebuild
    # Generation 4 took everything, the waiting days and the new ones, in date order, each row once.
    rows = _g_rows(kafka_bootstrap, g4)
    names = [name for name, _ in rows]
    assert len(rows) == len(set(rows)) and names == sorted(names) and expected <= set(names)
    assert len(rows) == 29 * 480 + 4800  # weeks 1-4 with the Wednesday, the flipped Thursday (x10), the 2 new days
    # The standby generation 1 (kept for switching back) got the new days too.
    assert {d.name for d in new_days} <= {Path(f.file_name).name for f in
                                         Ledger(sessions, settings.topic).files("committed")}
