"""Ingest against the real broker and a real SQLite database: validation, dead letters, exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from include.history import db
from include.ingest.errors import IngestError
from include.ingest.interval import ingest_files
from include.ingest.markers import control_topic
from include.settings import settings_from_env
from tests.support import BLOG_FILE, PROJECT, read_topic

pytestmark = pytest.mark.integration

HEADER = "observed_at,shop_id,shop_type,x,y,busy"


def _settings(tmp_path, bootstrap, topic, **over):
    env = {"RETRAIN_STATE_DIR": str(tmp_path / "state"), "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "RETRAIN_TOPIC": topic}
    env.update({k: str(v) for k, v in over.items()})
    return settings_from_env(env)


def _good_rows(n: int, start_hour: int = 0) -> list[str]:
    types = ["grocery", "pharmacy", "restaurant", "electronics", "florist"]
    rows = []
    for i in range(n):
        hour = (start_hour + i) % 24
        day = 5 + ((start_hour + i) // 24) % 20
        rows.append(f"2026-01-{day:02d}T{hour:02d}:00:00Z,{i % 100 + 1},{types[i % 5]},{i % 20},{(i * 7) % 20},{i % 2}")
    return rows


def _ledger(settings):
    with db.session_factory(settings.db_url)() as s:
        return {r.file_name: r for r in s.scalars(select(db.IngestedFile))}


def _quarantine(settings):
    with db.session_factory(settings.db_url)() as s:
        return list(s.scalars(select(db.QuarantinedRow).order_by(db.QuarantinedRow.line)))


def test_blog_file_ingests_with_exactly_its_malformed_line_quarantined(tmp_path, kafka_bootstrap, topic):
    settings = _settings(tmp_path, kafka_bootstrap, topic, RETRAIN_SCHEMA="blog_drift")
    result = ingest_files([BLOG_FILE], settings=settings)
    assert result.files[0].rows == 11_199 and result.files[0].bad == 1
    messages = read_topic(kafka_bootstrap, topic)
    assert len(messages) == 11_199
    # the value is the row as CSV text in schema order; BOM and CR are gone
    first_line = BLOG_FILE.read_bytes().split(b"\r\n")[0].lstrip(b"\xef\xbb\xbf")
    assert messages[0].value() == first_line
    headers = dict(messages[0].headers())
    assert headers["schema"] == b"blog-drift-v2" and headers["line"] == b"1" and headers["source_file"].endswith(b"drift_2weeks_V2.csv")
    assert messages[0].key() == first_line.split(b",")[1]  # shop id
    dead = read_topic(kafka_bootstrap, settings.dlq_topic)
    assert len(dead) == 1
    assert json.loads(dead[0].value())["line"] == 5601
    quarantined = _quarantine(settings)
    assert [(q.line, q.reason) for q in quarantined] == [(5601, quarantined[0].reason)]
    assert "13" in quarantined[0].reason and "14" in quarantined[0].reason
    # a rerun of the same file produces nothing
    again = ingest_files([BLOG_FILE], settings=settings)
    assert again.files[0].status == "skipped"
    assert len(read_topic(kafka_bootstrap, topic)) == 11_199


BAD_ROWS = [
    ("wrong field count", "2026-01-05T01:00:00Z,1,grocery,3,4", None, "field"),
    ("non-numeric", "2026-01-05T01:00:00Z,1,grocery,abc,4,1", "x", ""),
    ("out of range", "2026-01-05T01:00:00Z,1,grocery,25,4,1", "x", "19"),
    ("unknown category", "2026-01-05T01:00:00Z,1,bakery,3,4,1", "shop_type", "bakery"),
    ("bad label", "2026-01-05T01:00:00Z,1,grocery,3,4,2", "busy", ""),
    ("bad timestamp", "2026-13-05T01:00:00Z,1,grocery,3,4,1", "observed_at", ""),
    ("empty line", "", None, "empty"),
    ("huge number", "2026-01-05T01:00:00Z,1,grocery,3,4," + "1" * 5000, "busy", "digits"),
]


@pytest.mark.parametrize("kind,bad_line,field,reason_part", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_each_bad_row_kind_is_quarantined_with_line_field_and_reason(tmp_path, kafka_bootstrap, topic, kind, bad_line, field, reason_part):
    rows = _good_rows(150)
    rows.insert(100, bad_line)  # physical line 102 (after the header)
    path = tmp_path / "observations_2026-01-05.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    settings = _settings(tmp_path, kafka_bootstrap, topic)
    result = ingest_files([path], settings=settings)
    assert (result.files[0].rows, result.files[0].bad) == (150, 1)
    assert len(read_topic(kafka_bootstrap, topic)) == 150
    quarantined = _quarantine(settings)
    assert len(quarantined) == 1, [q.reason for q in quarantined]
    q = quarantined[0]
    assert q.line == 102 and q.file_name == str(path)
    assert q.field == field
    assert reason_part.lower() in q.reason.lower()
    assert len(read_topic(kafka_bootstrap, settings.dlq_topic)) == 1


def test_oversized_line_is_quarantined_without_loading_it(tmp_path, kafka_bootstrap, topic):
    from include.ingest.interval import prepare
    from include.ingest.transaction import ingest_file
    from include.schema import load_schema

    rows = _good_rows(200)
    rows.insert(50, "2026-01-05T01:00:00Z,1,grocery,3,4," + "9" * 3_000_000)
    path = tmp_path / "observations_2026-01-05.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    settings = _settings(tmp_path, kafka_bootstrap, topic)
    clients, sessions = prepare(settings, use_airflow=False)
    result = ingest_file(path, settings=settings, schema=load_schema("drone"), clients=clients, sessions=sessions,
                         max_line_bytes=10_000)
    assert (result.rows, result.bad) == (200, 1)
    (q,) = _quarantine(settings)
    assert q.line == 52 and ("long" in q.reason.lower() or "bytes" in q.reason.lower()), q.reason
    assert len(read_topic(kafka_bootstrap, topic)) == 200


def test_bom_crlf_and_quoted_newline_are_valid(tmp_path, kafka_bootstrap, topic):
    # a quoted field with a newline: the shop_type category cannot hold one, so use a quoted plain value
    rows = _good_rows(10)
    rows[3] = '"2026-01-05T03:00:00Z",4,"restaurant",3,"4",1'
    path = tmp_path / "observations_2026-01-05.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join([HEADER, *rows]) + "\r\n").encode())
    settings = _settings(tmp_path, kafka_bootstrap, topic)
    result = ingest_files([path], settings=settings)
    assert (result.files[0].rows, result.files[0].bad) == (10, 0)
    values = [m.value().decode() for m in read_topic(kafka_bootstrap, topic)]
    assert values[3] == "2026-01-05T03:00:00Z,4,restaurant,3,4,1"
    assert all("\r" not in v and "\ufeff" not in v for v in values)


def test_quoted_newline_record_counts_from_its_first_line(tmp_path, kafka_bootstrap, topic):
    rows = _good_rows(300)
    rows.insert(10, '2026-01-05T01:00:00Z,1,"groc\nery",3,4,1')  # spans lines 12-13; bad category
    path = tmp_path / "observations_2026-01-05.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    settings = _settings(tmp_path, kafka_bootstrap, topic)
    result = ingest_files([path], settings=settings)
    assert (result.files[0].rows, result.files[0].bad) == (300, 1)
    (q,) = _quarantine(settings)
    assert q.line == 12 and q.field == "shop_type"


def test_too_many_bad_rows_fails_the_file_and_produces_nothing(tmp_path, kafka_bootstrap, topic):
    rows = _good_rows(100) + ["2026-01-05T01:00:00Z,1,grocery,99,4,1"] * 2  # 2 of 102 = 1.96% > 1%
    path = tmp_path / "observations_2026-01-05.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    settings = _settings(tmp_path, kafka_bootstrap, topic)
    with pytest.raises(IngestError) as excinfo:
        ingest_files([path], settings=settings)
    message = str(excinfo.value)
    assert str(path) in message and "2 of 102" in message and "nothing" in message
    assert read_topic(kafka_bootstrap, topic) == []
    assert read_topic(kafka_bootstrap, settings.dlq_topic) == []
    assert _ledger(settings)[str(path)].status == "rejected"
    assert {q.line for q in _quarantine(settings)} == {102, 103}


def test_wrong_header_fails_and_produces_nothing(tmp_path, kafka_bootstrap, topic):
    path = tmp_path / "observations_2026-01-05.csv"
    path.write_text("shop_id,observed_at,shop_type,x,y,busy\n" + "\n".join(_good_rows(5)) + "\n")
    settings = _settings(tmp_path, kafka_bootstrap, topic)
    with pytest.raises(IngestError, match="header"):
        ingest_files([path], settings=settings)
    assert read_topic(kafka_bootstrap, topic) == []


def test_empty_file_is_a_success_with_zero_rows(tmp_path, kafka_bootstrap, topic):
    path = tmp_path / "observations_2026-01-05.csv"
    path.write_bytes(b"")
    result = ingest_files([path], settings=_settings(tmp_path, kafka_bootstrap, topic))
    assert (result.files[0].status, result.files[0].rows) == ("empty", 0)


def _cli(tmp_path, bootstrap, topic, files, fault=None):
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "RETRAIN_STATE_DIR": str(tmp_path / "state"),
           "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "RETRAIN_TOPIC": topic}
    if fault:
        env["RETRAIN_FAULT_POINT"] = fault
    return subprocess.run([sys.executable, "-m", "include", "ingest", *map(str, files)], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fault", ["ingest_mid_file:1", "ingest_before_commit", "ingest_after_commit"])
def test_sigkill_then_retry_lands_every_row_exactly_once(tmp_path, kafka_bootstrap, topic, fault):
    rows = _good_rows(70_000)
    path = tmp_path / "observations_2026-01-05.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    killed = _cli(tmp_path, kafka_bootstrap, topic, [path], fault=fault)
    assert killed.returncode == -9, killed.stderr[-2000:]
    visible = read_topic(kafka_bootstrap, topic)
    if fault == "ingest_after_commit":
        assert len(visible) == 70_000  # committed in Kafka, not yet in the ledger
    else:
        assert visible == []  # the open transaction is invisible to read_committed
    retried = _cli(tmp_path, kafka_bootstrap, topic, [path])
    assert retried.returncode == 0, retried.stderr[-3000:]
    status = json.loads(retried.stdout)["files"][0]["status"]
    assert status == ("recovered" if fault == "ingest_after_commit" else "committed")
    values = [m.value().decode() for m in read_topic(kafka_bootstrap, topic)]
    assert values == rows  # each row once, in file order
    assert len(read_topic(kafka_bootstrap, control_topic(topic))) == 1
    # and a third run is a no-op
    third = _cli(tmp_path, kafka_bootstrap, topic, [path])
    assert json.loads(third.stdout)["files"][0]["status"] == "skipped"
    assert len(read_topic(kafka_bootstrap, topic)) == 70_000


def test_a_file_older_than_ingested_data_waits_for_a_rebuild_with_a_clear_message(tmp_path, kafka_bootstrap, topic):
    settings = _settings(tmp_path, kafka_bootstrap, topic)
    newer = tmp_path / "observations_2026-01-12.csv"
    newer.write_text(HEADER + "\n" + "\n".join(_good_rows(50)) + "\n")
    ingest_files([newer], settings=settings)
    older = tmp_path / "observations_2026-01-05.csv"
    older.write_text(HEADER + "\n" + "\n".join(_good_rows(40, start_hour=3)) + "\n")
    result = ingest_files([older], settings=settings)
    assert [f.status for f in result.files] == ["waiting_for_rebuild"] and result.rows == 0
    (message,) = result.waiting_lines()
    assert str(older) in message and "2026-01-12" in message and "waiting for a rebuild" in message
    assert _ledger(settings)[str(older)].status == "waiting_for_rebuild"
    assert len(read_topic(kafka_bootstrap, topic)) == 50
    # the same day again with new content is not "older": allowed
    same_day = tmp_path / "observations_2026-01-12b.csv"
    same_day.write_text(HEADER + "\n" + "\n".join(_good_rows(5, start_hour=7)) + "\n")
    assert ingest_files([same_day], settings=settings).rows == 5
