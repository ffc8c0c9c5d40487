"""Older files wait for a rebuild; a generation is filled in date order, exactly once; new files follow.

Real broker, real SQLite history, the real ingest code (one Kafka transaction per file) and the rebuild's fill.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta

import pytest

from include.demo.generate import generate_range
from include.history import db
from include.ingest.interval import ingest_files
from include.ingest.ledger import WAITING, Ledger
from include.lifecycle.generations import generation_settings
from include.rebuild import records
from include.rebuild.fill import append_missing, ensure_topics, generation_lock
from include.schema import load_schema
from include.settings import settings_from_env
from include.kafka.clients import KafkaClients
from tests.support import PROJECT, process_env, read_topic, unique

pytestmark = pytest.mark.integration

D0 = date(2026, 1, 5)


def _settings(tmp_path, bootstrap):
    return settings_from_env({"RETRAIN_STATE_DIR": str(tmp_path / "state"), "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                              "RETRAIN_TOPIC": unique("reb"), "RETRAIN_LANDING_DIR": str(tmp_path / "landing")})


def _days(tmp_path, first: int, last: int):
    return generate_range(D0 + timedelta(days=first), D0 + timedelta(days=last), tmp_path / "landing", seed=3, shops=2)


def _rows(bootstrap, topic):
    return [(m.headers()[0][1].decode().rsplit("/", 1)[-1], m.value()) for m in read_topic(bootstrap, topic)]


def test_an_older_file_waits_then_a_generation_takes_everything_in_order_and_follows(tmp_path, kafka_bootstrap):
    settings = _settings(tmp_path, kafka_bootstrap)
    sessions = db.session_factory(settings.db_url)
    newer = _days(tmp_path, 3, 5)
    assert ingest_files(newer, settings=settings).rows == 3 * 48
    before = _rows(kafka_bootstrap, settings.topic)

    older = _days(tmp_path, 0, 1)
    result = ingest_files(older, settings=settings)
    assert [f.status for f in result.files] == [WAITING, WAITING] and result.rows == 0
    assert result.rebuild["generation"] == 2 and not result.rebuild["joined"]
    line = result.waiting_lines()[0]
    assert "observations_2026-01-05.csv: dated 2026-01-05, older than the newest data in" in line
    assert line.endswith(f"waiting for a rebuild; the live topic and model are unchanged (rebuild {result.rebuild['id']} "
                         "of generation 2: requested)")
    assert _rows(kafka_bootstrap, settings.topic) == before  # the live topic is untouched
    ledger = Ledger(sessions, settings.topic)
    assert [f.file_date for f in ledger.files(WAITING)] == ["2026-01-05", "2026-01-06"]

    # The command line says it in one line on stderr, exit code 0; seen again, it requests no second rebuild.
    cli = subprocess.run([sys.executable, "-m", "include", "ingest", str(older[0])], capture_output=True, text=True,
                         cwd=PROJECT, timeout=120,
                         env=process_env({"RETRAIN_STATE_DIR": str(settings.state_dir),
                                          "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "RETRAIN_TOPIC": settings.topic}))
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert cli.stderr.splitlines()[-1].endswith(f"(rebuild {result.rebuild['id']} of generation 2: requested)")
    assert "older than the newest data" in cli.stderr.splitlines()[-1]
    assert len(records.all_of(sessions, settings.topic)) == 1

    # The rebuild's fill: every file, waiting ones included, in date order, exactly once (twice changes nothing).
    schema, clients = load_schema("drone"), KafkaClients(settings)
    for _ in range(2):
        with generation_lock(settings, f"{settings.topic}.g2", wait=True):
            filled = append_missing(settings, clients, sessions, schema, source_generation=1, target_generation=2,
                                    include_waiting=True)
    assert filled.files == [] and filled.left_out == []
    g2 = _rows(kafka_bootstrap, f"{settings.topic}.g2")
    names = [name for name, _ in g2]
    assert names == sorted(names) and len(g2) == 5 * 48 and len(set(g2)) == len(g2)
    assert sorted(set(names)) == [p.name for p in sorted(older + newer)]

    # While the rebuild trains, a new live file goes to both generations; a file older than both waits in live.
    records.update(sessions, result.rebuild["id"], state="training")
    newest = _days(tmp_path, 6, 6)
    follow = ingest_files(newest, settings=settings)
    assert follow.rows == 48 and follow.followers[2]["files"] == [str(newest[0])]
    assert _rows(kafka_bootstrap, f"{settings.topic}.g2")[-48:] == _rows(kafka_bootstrap, settings.topic)[-48:]
    info = records.get(sessions, result.rebuild["id"])
    assert (info.files_planned, info.files_ingested, info.rows_ingested) == (6, 6, 6 * 48)


def test_the_ingest_of_a_generation_refuses_to_go_back_in_time(tmp_path, kafka_bootstrap):
    from include.ingest.errors import IngestError
    from include.ingest.transaction import ingest_file

    settings = _settings(tmp_path, kafka_bootstrap)
    g2 = generation_settings(settings, 2)
    schema, clients, sessions = load_schema("drone"), KafkaClients(settings), db.session_factory(settings.db_url)
    later, earlier = _days(tmp_path, 2, 2)[0], _days(tmp_path, 1, 1)[0]
    ensure_topics(clients, g2)
    ingest_file(later, settings=g2, schema=schema, clients=clients, sessions=sessions, older="refuse")
    with pytest.raises(IngestError, match="cannot go behind newer data"):
        ingest_file(earlier, settings=g2, schema=schema, clients=clients, sessions=sessions, older="refuse")
