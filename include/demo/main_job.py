"""The main job behind ``make run``: demo data, a backfill of its weeks through the DAGs, an accuracy table.

Runs outside Airflow against a running local Airflow (``scripts/airflow.sh start``) through the ``airflow``
CLI, as a user would. Everything it decides comes from its arguments and what exists (landing files, DAG
runs, the ledger), never from the wall clock, so a second run reuses what exists and ingests nothing twice.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from datetime import date, timedelta
from pathlib import Path

from include.settings import Settings
from include.training.ceiling import iso_week, iso_week_of_day

log = logging.getLogger(__name__)

INGEST_DAG = "ingest_observations"
TRAIN_DAG = "train_model"
REBUILD_DAG = "rebuild_model"
DEMO_START = date(2026, 1, 5)  # a Monday
DEMO_WEEKS = 4
DEMO_DRIFT_WEEK = 3


def ensure_demo_data(settings: Settings, start: date, weeks: int, drift_week: int | None, seed: int = 7) -> list[Path]:
    """Generate ``weeks`` weeks of observations from ``start`` unless the landing folder already has CSV files."""
    from include.demo.generate import generate_range

    landing = Path(settings.landing_dir)
    existing = sorted(landing.glob("*.csv")) if landing.exists() else []
    if existing:
        log.info("landing folder %s already has %d CSV files; not generating", landing, len(existing))
        return existing
    end = start + timedelta(days=7 * weeks - 1)
    drift_from = start + timedelta(days=7 * (drift_week - 1)) if drift_week else None
    log.info("generating %s..%s into %s (drift from %s)", start, end, landing, drift_from)
    return generate_range(start, end, landing, seed=seed, drift_from=drift_from)


def _airflow(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["airflow", *args], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def list_runs(dag_id: str) -> list[dict]:
    """The DAG's runs (``run_id``, ``state``, ``logical_date``, ``end_date``, ...): from the running API server's
    REST API (a token and a page of runs: two HTTP requests; ``wait_until_idle`` asks every 5 s), else from
    the ``airflow`` CLI (a new process that imports Airflow: 3 s of CPU per call)."""
    runs = _api_runs(dag_id)
    return runs if runs is not None else _cli_runs(dag_id)


def _api_runs(dag_id: str) -> list[dict] | None:
    """``GET /api/v2/dags/{dag_id}/dagRuns`` as the configured admin user; None when the API cannot be asked."""
    import httpx

    env = os.environ
    url = f"http://{env.get('AIRFLOW__API__HOST', '127.0.0.1')}:{env.get('AIRFLOW__API__PORT', '8080')}"
    user = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin").split(",")[0].split(":")[0]
    passwords = Path(env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
                     or Path(env.get("AIRFLOW_HOME", "~/airflow")).expanduser()
                     / "simple_auth_manager_passwords.json.generated")
    try:
        password = json.loads(passwords.read_text())[user]
        answer = httpx.post(f"{url}/auth/token", json={"username": user, "password": password}, timeout=30)
        answer.raise_for_status()
        auth = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        runs: list[dict] = []
        while True:
            answer = httpx.get(f"{url}/api/v2/dags/{dag_id}/dagRuns", headers=auth, timeout=30,
                               params={"limit": 100, "offset": len(runs), "order_by": "id"})
            answer.raise_for_status()
            page = answer.json()
            runs += [{**run, "run_id": run["dag_run_id"]} for run in page["dag_runs"]]
            if not page["dag_runs"] or len(runs) >= page["total_entries"]:
                return runs
    except (OSError, KeyError, ValueError, httpx.HTTPError) as error:
        log.debug("Airflow's REST API at %s cannot list runs (%s); asking the CLI", url, error)
    return None


def _cli_runs(dag_id: str) -> list[dict]:
    out = _airflow("dags", "list-runs", dag_id, "-o", "json").stdout
    # Airflow may print warnings before the JSON; the JSON is the line that is a list.
    for line in reversed(out.splitlines()):
        if line.startswith("[{") or line.strip() == "[]":
            return json.loads(line)
    raise RuntimeError(f"no JSON in `airflow dags list-runs {dag_id}` output:\n{out[-2000:]}")


def wait_until_idle(dag_ids: tuple[str, ...], timeout_s: float, settle_s: float = 20.0) -> dict[str, dict[str, int]]:
    """Wait until no run of ``dag_ids`` is queued or running for ``settle_s`` (asset-triggered runs follow)."""
    deadline = time.monotonic() + timeout_s
    idle_since = None
    while True:
        counts = {}
        for dag_id in dag_ids:
            states: dict[str, int] = {}
            for run in list_runs(dag_id):
                states[run["state"]] = states.get(run["state"], 0) + 1
            counts[dag_id] = states
        busy = sum(c.get("queued", 0) + c.get("running", 0) for c in counts.values())
        log.info("runs: %s", counts)
        if busy == 0:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= settle_s:
                return counts
        else:
            idle_since = None
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs still active after {timeout_s:.0f}s: {counts}")
        time.sleep(5)


def backfill(from_date: date, to_date: date, *, reprocess: str = "none") -> None:
    """Create a backfill of the ingest DAG over [from_date, to_date]; training follows on the Asset events.

    With Airflow's SQLite metadata database, call it while the scheduler is stopped (``scripts/run.sh`` does):
    a CLI backfill that collides with a running scheduler on SQLite can fail, and the scheduler can then die
    on a run the failed creation removed. PostgreSQL (the docker-compose stack) has no such limit.
    """
    _airflow("dags", "reserialize")  # the DAGs must be in the metadata DB before the scheduler has run
    for dag_id in (INGEST_DAG, TRAIN_DAG, REBUILD_DAG):
        _airflow("dags", "unpause", dag_id)
    for attempt in range(10):
        result = _airflow("backfill", "create", "--dag-id", INGEST_DAG, "--from-date", from_date.isoformat(),
                          "--to-date", to_date.isoformat(), "--reprocess-behavior", reprocess, "--max-active-runs", "1",
                          check=False)
        text = (result.stdout + result.stderr).strip()
        # Airflow's SQLite metadata DB refuses a writer that collides with the scheduler's transaction outright
        # (no busy wait can resolve a lock upgrade); the creation is rolled back, so trying again is safe.
        if result.returncode == 0 or "database is locked" not in text:
            break
        log.info("backfill creation collided with the scheduler on SQLite (attempt %d); retrying", attempt + 1)
        time.sleep(2 + attempt)
    if result.returncode != 0 and "No runs to create" not in text and "AlreadyRunningBackfill" not in text:
        raise RuntimeError(f"backfill create failed:\n{text[-3000:]}")
    log.info("backfill %s..%s: %s", from_date, to_date, text.splitlines()[-1] if text else "")


def accuracy_table(settings: Settings, model_name: str = "default", *, ceiling: bool = True) -> str:
    """Per ISO week of event time (markdown): records trained, mean prequential accuracy, the window accuracy at the
    week's end beside the week's batch ceiling and Bayes-optimal accuracy, and the drift events of the week (with how
    many records after the generator's rule changed each was raised).

    Args:
        settings: Project settings (the history database; the topic, for the ceiling and the sidecars).
        model_name: The model whose history is shown.
        ceiling: Train the per-week batch ceilings (:mod:`include.training.ceiling`; reads the topic, ~5 s a week).
    """
    from sqlalchemy import select

    from include.history import db
    from include.monitoring.bayes import concept_changes, landed_files

    sessions = db.session_factory(settings.db_url)
    with sessions() as session:
        rows = session.execute(
            select(db.BatchMetric.event_time_min, db.BatchMetric.n, db.BatchMetric.window_accuracy,
                   db.BatchMetric.prequential_accuracy)
            .where(db.BatchMetric.model_name == model_name, db.BatchMetric.kind == "incremental")
            .order_by(db.BatchMetric.seq)
        ).all()
        drifts = session.execute(select(db.DriftEvent.event_time, db.DriftEvent.seq, db.BatchMetric.n)
                                 .join(db.BatchMetric, (db.BatchMetric.model_name == db.DriftEvent.model_name)
                                       & (db.BatchMetric.batch_key == db.DriftEvent.batch_key))
                                 .where(db.DriftEvent.model_name == model_name)
                                 .order_by(db.DriftEvent.seq)).all()
        ingested = session.execute(select(db.IngestedFile.status, db.IngestedFile.rows_valid)).all()
        files = landed_files(session, settings.topic) or []
    weeks = _weekly_accuracy(rows)
    bayes = _weekly_bayes(files)
    changes = concept_changes(files)
    ceilings = _ceilings(settings) if ceiling and weeks else {}
    lines = ["| week | records | mean prequential accuracy | window accuracy at end | batch ceiling | Bayes-optimal "
             "| drift events |", "|---|---:|---:|---:|---:|---:|---|"]
    for key, w in weeks.items():
        events = [(seq + n) for t, seq, n in drifts if t is not None and iso_week(t) == key]
        lines.append(f"| {key} | {w['records']} | {w['preq'] / max(w['batches'], 1):.3f} | {_num(w['window'])} | "
                     f"{_num(ceilings.get(key, {}).get('accuracy'))} | {_num(bayes.get(key))} | "
                     f"{_drift_cell(events, changes)} |")
    committed = [r for r in ingested if r.status == "committed"]
    lines.append("")
    lines.append(f"ingested files: {len(committed)}, rows: {sum(r.rows_valid for r in committed)}")
    for records, day in changes:
        lines.append(f"the generator's rule changes on {day}, after {records} records")
    return "\n".join(lines)


def _weekly_accuracy(rows) -> dict[str, dict]:  # noqa: ANN001 - rows of (event_time_min, n, window, prequential)
    weeks: dict[str, dict] = {}
    for t, n, win, preq in rows:
        key = "(no event time)" if t is None else iso_week(t)
        w = weeks.setdefault(key, {"records": 0, "batches": 0, "preq": 0.0, "window": None})
        w["records"] += n
        w["batches"] += 1
        w["preq"] += preq or 0.0
        w["window"] = win
    return weeks


def _weekly_bayes(files) -> dict[str, float]:  # noqa: ANN001 - LandedFile list
    sums: dict[str, list[float]] = {}
    for f in files:
        if f.file_date:
            acc = sums.setdefault(iso_week_of_day(date.fromisoformat(f.file_date)), [0.0, 0.0])
            acc[0] += f.rows * f.bayes_accuracy
            acc[1] += f.rows
    return {k: v[0] / v[1] for k, v in sums.items() if v[1]}


def _ceilings(settings: Settings) -> dict[str, dict]:
    from include.training.ceiling import weekly_ceilings

    try:
        return weekly_ceilings(settings)
    except Exception as exc:  # noqa: BLE001 - the table is still worth printing without the ceiling column
        log.warning("batch ceilings not computed: %s", exc)
        return {}


def _num(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"


def _drift_cell(at_records: list[int], changes: list[tuple[int, str | None]]) -> str:
    """``N``, and for each event the records since the last rule change before it (``+900 after the change``)."""
    if not at_records:
        return "0"
    parts = []
    for records in at_records:
        before = [c for c, _ in changes if c <= records]
        parts.append(f"+{records - before[-1]} records after the change" if before else f"at record {records}")
    return f"{len(at_records)} ({'; '.join(parts)})"


def scoring_lines(settings: Settings, model_name: str = "default") -> str:
    """How to score a row with the champion: ``predict`` on the newest landing file and ``serve`` + curl."""
    import json

    from include.history.db import HistoryNotReady
    from include.lifecycle.registry import Registry

    try:
        version = Registry(settings, migrate=False).champion_version(model_name)
    except HistoryNotReady:
        version = None
    landing = Path(settings.landing_dir)
    files = sorted(landing.glob("observations_*.csv")) if landing.exists() else []
    example = str(files[-1]) if files else "observations.csv"
    instance = _example_instance(files[-1], settings) if files else {}
    url = f"http://{settings.serve_host}:{settings.serve_port}/v1/models/{model_name}:predict"
    champion = (f"model {model_name!r}, version {version}" if version is not None
                else f"model {model_name!r} has none yet (a version is registered when training finishes)")
    return "\n".join([
        f"Champion:   {champion}",
        f"Score rows: python -m include predict {example} --output scored.csv   (or --format jsonl, stdin: -)",
        f"Serve:      {_serving_state(settings, model_name)}",
        f"            curl -s {url} -d '{json.dumps({'instances': [instance]})}'",
    ]) + "\n"


def _serving_state(settings: Settings, model_name: str) -> str:
    """Whether the HTTP scorer answers (``make run`` starts it), and how to start it otherwise."""
    import httpx

    base = f"http://{settings.serve_host}:{settings.serve_port}"
    try:
        running = httpx.get(f"{base}/v1/models/{model_name}", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        running = False
    if running:
        return f"running at {base} (python -m include serve, TF Serving's REST API, following the champion; make stop stops it)"
    return "python -m include serve   (TF Serving's REST API; follows promotions and rollbacks)"


def _example_instance(path: Path, settings: Settings) -> dict:
    """The file's first row as a request (label left out, numbers as numbers)."""
    from include.schema import load_schema

    with path.open(encoding="utf-8") as lines:
        names, row = next(lines).strip().split(","), next(lines, "").strip().split(",")
    out = {name: int(value) if value.isdigit() else value for name, value in zip(names, row)}
    out.pop(load_schema(settings.schema_name).label, None)
    return out


def trigger(dag_id: str) -> None:
    """A manual run of ``dag_id`` (retried when Airflow's SQLite metadata DB refuses a writer beside the scheduler)."""
    for attempt in range(10):
        result = _airflow("dags", "trigger", dag_id, check=False)
        if result.returncode == 0:
            return
        time.sleep(2 + attempt)
    raise RuntimeError(f"airflow dags trigger {dag_id} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def land_older_week(settings: Settings, start: date, timeout_s: float) -> str:
    """The backfill that needs a rebuild: the week before the demo's first lands after the demo, a manual run of the
    ingest DAG finds it (it waits for a rebuild), ``rebuild_model`` rebuilds generation 2 with every week in time
    order and the gate decides; what happened, for the user."""
    from include.demo.generate import generate_range
    from include.history import db
    from include.lifecycle.generations import Generations
    from include.rebuild import records

    first = start - timedelta(days=7)
    generate_range(first, start - timedelta(days=1), Path(settings.landing_dir), seed=7)
    trigger(INGEST_DAG)  # a manual run considers every dated file; the ledger skips the ingested ones
    time.sleep(15)  # the ingest run, then the rebuild it requests
    wait_until_idle((INGEST_DAG, TRAIN_DAG, REBUILD_DAG), timeout_s)
    sessions = db.session_factory(settings.db_url)
    generations = Generations(sessions, settings.topic)
    lines = [f"Older week: {first}..{start - timedelta(days=1)} landed after the demo (make run OLDER_WEEK=1)"]
    for r in records.all_of(sessions, settings.topic)[:1]:
        gate = r.gate or {}
        lines.append(f"Rebuild {r.id}: generation {r.generation} ({r.topic}), {r.files_ingested} files, "
                     f"{r.rows_ingested} rows in date order, {r.records_trained} records trained into {r.lineage}")
        numbers = (f"{gate.get('candidate_model')} v{r.candidate_version} {gate['candidate_accuracy']:.4f} vs live "
                   f"champion {gate.get('champion_model')} v{gate.get('champion_version')} "
                   f"{gate['champion_accuracy']:.4f} on {gate.get('rows')} held-out rows"
                   if "candidate_accuracy" in gate else "")
        lines.append(f"Gate:       {r.state}{': ' + numbers if numbers else ''} ({r.decision_reason or r.message})")
    lines.append(f"Live:       generation {generations.live()} ({generations.live_topic()}); serving follows "
                 f"{generations.lineage('default')[0]}; `python -m include generations list` / `switch` to go back")
    return "\n".join(lines) + "\n"


def run_step(step: str, settings: Settings, *, start: date = DEMO_START, weeks: int = DEMO_WEEKS,
             drift_week: int | None = DEMO_DRIFT_WEEK, timeout_s: float = 1800) -> str:
    """One step of the main job; returns what to print.

    Args:
        step: ``prepare`` (demo data and the backfill; the scheduler must be stopped), ``wait`` (until the runs are
            done, then the table), ``table`` (only the table), ``scoring`` (how to score rows with the champion) or
            ``older`` (the week before the demo lands: a rebuild, the gate and the switch; the scheduler running).
    """
    if step == "scoring":
        return scoring_lines(settings)
    if step == "older":
        return land_older_week(settings, start, timeout_s)
    if step == "prepare":
        ensure_demo_data(settings, start, weeks, drift_week)
        backfill(start, start + timedelta(days=7 * weeks - 1))
        return ""
    if step == "wait":
        wait_until_idle((INGEST_DAG, TRAIN_DAG), timeout_s)
    elif step != "table":
        raise ValueError(f"unknown step {step!r}: prepare, wait, table or scoring")
    return accuracy_table(settings) + "\n"
