"""Bad input: a corpus of malformed CSV files and poison Kafka messages, and injection-shaped names and values.

Every bad row gives a quarantine record (and a dead letter) naming the file, the line, the field and the reason;
a bad file is rejected whole with an error naming it; nothing valid is lost. Strings shaped like SQL, HTML or
template injection travel through ingest, training, history and the UI plugin's JSON API as plain data.
"""

from __future__ import annotations

import csv
import io
import json
import random
import tracemalloc

import pytest
from confluent_kafka import Producer
from sqlalchemy import inspect, select

from include.history import db
from include.ingest.errors import IngestError
from include.ingest.interval import ingest_files
from tests.faults.helpers import (
    HEADER,
    PROJECT,
    batch_rows,
    check_history,
    check_topic,
    check_training,
    drone_rows,
    env_for,
    settings_for,
    stage_hooks,
    train_in_process,
    write_csv,
)
from tests.support import create_topic, read_topic

pytestmark = [pytest.mark.faults, pytest.mark.integration]

T = "2026-01-05T01:00:00Z"
# (what is wrong, the raw line, the field it names (None: the record as a whole), a part of the reason)
BAD_LINES: list[tuple[str, bytes, str | None, str]] = [
    ("too few fields", f"{T},1,grocery,3,4".encode(), None, "expected 6 fields, found 5"),
    ("too many fields", f"{T},1,grocery,3,4,1,extra".encode(), None, "expected 6 fields, found 7"),
    ("non-numeric", f"{T},1,grocery,abc,4,1".encode(), "x", "is not an integer"),
    ("above max", f"{T},1,grocery,25,4,1".encode(), "x", "above max 19"),
    ("below min", f"{T},1,grocery,3,-1,1".encode(), "y", "below min 0"),
    ("unknown category", f"{T},1,bakery,3,4,1".encode(), "shop_type", "is not one of"),
    ("label out of range", f"{T},1,grocery,3,4,2".encode(), "busy", "above max 1"),
    ("impossible date", b"2026-13-05T01:00:00Z,1,grocery,3,4,1", "observed_at", "ISO 8601"),
    ("time without zone", b"2026-01-05T01:00:00,1,grocery,3,4,1", "observed_at", "no time zone"),
    ("time not in UTC", b"2026-01-05T01:00:00+02:00,1,grocery,3,4,1", "observed_at", "not in UTC"),
    ("empty line", b"", None, "empty line"),
    ("blank line", b"   ", None, "empty line"),
    ("NUL inside a field", f"{T},1,groc\x00ery,3,4,1".encode(), "shop_type", "is not one of"),
    ("binary garbage line", bytes(range(128, 256)) + b"\x00\x01garbage", None, "invalid UTF-8"),
    ("oversized line (1.5 MB)", f"{T},1,grocery,3,4,".encode() + b"1" * 1_500_000, None, "longer than 1000000 bytes"),
    # Last bad line: a quote never closed swallows the lines after it until the end of the file, where it is
    # reported at its first line and those lines are read again as records of their own.
    ("unterminated quote", f'{T},1,"grocery,3,4,1'.encode(), None, "unterminated quoted field"),
]


def _quarantine(url: str) -> list:
    with db.session_factory(url)() as s:
        return list(s.scalars(select(db.QuarantinedRow).order_by(db.QuarantinedRow.line)))


def test_malformed_rows_are_quarantined_with_file_line_field_and_reason(tmp_path, kafka_bootstrap, topic,
                                                                        fault_row):
    good = drone_rows(2000)
    lines, expected = [HEADER.encode()], {}
    for i, row in enumerate(good):
        if i % 120 == 60 and len(expected) < len(BAD_LINES):
            kind, raw, field, reason = BAD_LINES[len(expected)]
            lines.append(raw)
            expected[len(lines)] = (kind, field, reason)  # physical line number (the header is line 1)
        lines.append(row.encode())
    path = tmp_path / "landing" / "observations_2026-01-05.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    env = env_for(tmp_path / "state", kafka_bootstrap, topic)
    settings = settings_for(env)
    result = ingest_files([path], settings=settings).files[0]
    check = check_topic(kafka_bootstrap, topic, good)
    fault_row(f"malformed CSV rows ({len(BAD_LINES)} kinds in one file)", runs=1, produced=len(good),
              in_topic=check.in_topic, duplicates=check.duplicates, losses=check.losses + check.unexpected,
              note=f"{result.bad} quarantined + dead-lettered")
    assert check.exact, check
    assert (result.rows, result.bad) == (len(good), len(BAD_LINES))
    got = {q.line: q for q in _quarantine(settings.db_url)}
    assert sorted(got) == sorted(expected)
    for line, (kind, field, reason) in expected.items():
        q = got[line]
        assert q.file_name == str(path) and q.field == field, (kind, q.field, q.reason)
        assert reason.lower() in q.reason.lower(), (kind, q.reason)
        assert len(q.raw) <= 200
    letters = {json.loads(m.value())["line"]: json.loads(m.value()) for m in read_topic(kafka_bootstrap,
                                                                                        settings.dlq_topic)}
    assert sorted(letters) == sorted(expected)
    for line, (kind, field, reason) in expected.items():
        assert letters[line]["file"] == str(path) and letters[line]["field"] == field, kind
        assert reason.lower() in letters[line]["reason"].lower(), kind


def test_a_10_mb_line_is_skipped_in_bounded_memory(tmp_path, kafka_bootstrap, topic, fault_row):
    good = drone_rows(200)
    path = tmp_path / "landing" / "observations_2026-01-05.csv"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as out:
        out.write(("\n".join([HEADER, *good[:100]]) + "\n").encode())
        out.write(f"{T},1,grocery,3,4,".encode() + b"7" * 10_000_000 + b"\n")
        out.write(("\n".join(good[100:]) + "\n").encode())
    settings = settings_for(env_for(tmp_path / "state", kafka_bootstrap, topic))
    tracemalloc.start()
    try:
        result = ingest_files([path], settings=settings).files[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    check = check_topic(kafka_bootstrap, topic, good)
    fault_row("a 10 MB line", runs=1, produced=len(good), in_topic=check.in_topic, duplicates=check.duplicates,
              losses=check.losses + check.unexpected, note=f"peak Python memory {peak / 1e6:.1f} MB")
    assert check.exact and (result.rows, result.bad) == (200, 1)
    (q,) = _quarantine(settings.db_url)
    assert q.line == 102 and "longer than" in q.reason and len(q.raw) <= 200
    assert peak < 8_000_000, f"the 10 MB line was held in memory (peak {peak / 1e6:.1f} MB)"


def test_bad_files_are_rejected_whole_and_a_changing_file_waits(tmp_path, kafka_bootstrap, topic, fault_row):
    env = env_for(tmp_path / "state", kafka_bootstrap, topic)
    settings = settings_for(env)
    rows = drone_rows(300)
    reordered = ["{1},{0},{2},{3},{4},{5}".format(*r.split(",")) for r in rows]
    garbage = random.Random(7).randbytes(65_536)
    cases = [
        ("different column order", b"shop_id,observed_at,shop_type,x,y,busy\n" + "\n".join(reordered).encode(),
         "header"),
        ("wrong header", b"time,shop,type,col_x,col_y,label\n" + "\n".join(rows).encode(), "header"),
        ("no header", "\n".join(rows).encode(), "header"),
        ("binary garbage", garbage, "header"),
    ]
    for i, (kind, content, reason) in enumerate(cases):
        path = tmp_path / "landing" / f"observations_2026-02-{i + 1:02d}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        with pytest.raises(IngestError) as excinfo:
            ingest_files([path], settings=settings)
        assert str(path) in str(excinfo.value) and reason in str(excinfo.value), (kind, str(excinfo.value))
    assert read_topic(kafka_bootstrap, topic) == [], "a rejected file left rows in the topic"

    # A file that grows while it is read (a writer still appending): aborted whole, ingested once it is stable.
    big = drone_rows(70_000, start=10_000)
    growing = write_csv(tmp_path / "landing" / "observations_2026-03-01.csv", big)
    extra = drone_rows(10, start=90_000)

    def append(n: int) -> None:
        if n == 1:
            with open(growing, "a", encoding="utf-8") as out:
                out.write("\n".join(extra) + "\n")

    with stage_hooks({"ingest_mid_file": append}), pytest.raises(IngestError, match="changed while it was being read"):
        ingest_files([growing], settings=settings)
    assert read_topic(kafka_bootstrap, topic) == []
    assert ingest_files([growing], settings=settings).files[0].status == "committed"
    check = check_topic(kafka_bootstrap, topic, big + extra)
    fault_row("bad files: column order, wrong/no header, binary garbage; a file changing while read", runs=7,
              produced=len(big) + len(extra), in_topic=check.in_topic, duplicates=check.duplicates,
              losses=check.losses + check.unexpected, note="4 rejected whole, the changing one ingested when stable")
    assert check.exact, check


POISON = [
    b"\xff\xfe not UTF-8",
    b"",
    None,  # a tombstone
    b"a,b,c",
    f"{T},1,grocery,99,4,1".encode(),
    f"{T},1,bakery,3,4,1".encode(),
    f"{T},1,grocery,3,4,1\n{T},2,grocery,3,4,1".encode(),
    b"not-a-time,1,grocery,3,4,1",
    f"{T},1,grocery,3.5,4,1".encode(),
    b"9" * 500_000,
    f'"{T},1,grocery,3,4,1'.encode(),
    f"{T},1,gro\x1fcery,3,4,1".encode(),
]


def test_poison_messages_are_dead_lettered_and_every_offset_trained_once(tmp_path, kafka_bootstrap, topic,
                                                                         fault_row):
    good = drone_rows(1000)
    create_topic(kafka_bootstrap, topic)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True})
    poison_at = {}
    offset = 0
    for i, row in enumerate(good):
        if i % 80 == 40 and len(poison_at) < len(POISON):
            producer.produce(topic, POISON[len(poison_at)])
            poison_at[offset] = len(poison_at)
            offset += 1
        producer.produce(topic, row.encode())
        offset += 1
    assert producer.flush(60) == 0
    env = env_for(tmp_path / "state", kafka_bootstrap, topic)
    summary = train_in_process(env)
    data_offsets = {0: list(range(offset))}
    final = check_training(settings_for(env).db_url, data_offsets)
    fault_row(f"poison Kafka messages ({len(POISON)} kinds)", runs=1, produced=offset, in_topic=offset,
              trained=final.trained, duplicates=final.duplicates, losses=final.losses,
              note=f"{summary.poison} dead-lettered")
    assert summary.poison == len(POISON) and summary.records == offset
    assert final.exact and final.n_sum == offset, final
    letters = {json.loads(m.value())["offset"]: json.loads(m.value())
               for m in read_topic(kafka_bootstrap, f"{topic}.dlq")}
    assert sorted(letters) == sorted(poison_at)
    assert all(v["reason"] and v["partition"] == 0 and v["topic"] == topic for v in letters.values())
    for row in batch_rows(settings_for(env).db_url):
        lo, hi = row.offsets_from["0"], row.offsets_to["0"]
        poisoned = sum(lo <= o < hi for o in poison_at)
        assert row.n_train + row.n_eval == row.n - poisoned, row.batch_key
    check_history(env)


# --- injection -----------------------------------------------------------------------------------------------

NASTY = ["'); DROP TABLE batch_metrics;--", "<script>alert(1)</script>", 'Robert"); DROP TABLE x;--',
         "a, 'b'", "{{7*7}}${jndi:ldap://127.0.0.1/a}", "shöp 🛸"]
NASTY_MODEL = "m'); DROP TABLE training_runs;--<img src=x onerror=alert(1)>"
NASTY_FILE = "observations_2026-01-05 '); DROP TABLE ingest_files;-- <img src=x onerror=alert(1)> $(id).csv"


def _csv_line(fields: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def test_injection_shaped_categories_and_names_travel_literally(tmp_path, kafka_bootstrap, topic, fault_row,
                                                                monkeypatch):
    import yaml

    categories = ["grocery", *NASTY]
    schema_path = tmp_path / "nasty_schema.yaml"
    schema_path.write_text(yaml.safe_dump({
        "id": "drone-nasty-v1", "header": True, "label": "busy", "key": "shop_id", "time": "observed_at",
        "columns": [{"name": "observed_at", "type": "timestamp"},
                    {"name": "shop_id", "type": "int", "min": 1, "max": 100000, "feature": False},
                    {"name": "shop_type", "type": "category", "categories": categories},
                    {"name": "x", "type": "int", "min": 0, "max": 19},
                    {"name": "y", "type": "int", "min": 0, "max": 19},
                    {"name": "busy", "type": "int", "min": 0, "max": 1}],
    }, allow_unicode=True), encoding="utf-8")
    rows = [_csv_line(r.split(",")[:2] + [categories[i % len(categories)]] + r.split(",")[3:])
            for i, r in enumerate(drone_rows(700))]
    bad_row = _csv_line([T, "1", "<svg onload=alert(1)>", "3", "4", "1"])
    first, second = rows[:500], rows[500:]
    landing = tmp_path / "landing"
    nasty_file = write_csv(landing / NASTY_FILE, first[:250] + [bad_row] + first[250:])
    env = env_for(tmp_path / "state", kafka_bootstrap, topic, RETRAIN_SCHEMA=str(schema_path))
    settings = settings_for(env)
    assert ingest_files([nasty_file], settings=settings).files[0].rows == 500
    train_in_process(env, model_name=NASTY_MODEL)
    # A second file and run: the model (categories in its saved config) resumes from its checkpoint.
    ingest_files([write_csv(landing / "observations_2026-01-06.csv", second)], settings=settings)
    resumed = train_in_process(env, model_name=NASTY_MODEL)
    # The first run read to the end, past the first file's 500 records and its commit marker (offset 500).
    assert resumed.checkpoint_from is not None and resumed.offsets_from == {"0": 501}

    check = check_topic(kafka_bootstrap, topic, rows)
    final = check_training(settings.db_url, check.offsets, model=NASTY_MODEL)
    fault_row("injection-shaped shop types, file name and model name", runs=4, produced=len(rows),
              in_topic=check.in_topic, trained=final.trained, duplicates=check.duplicates + final.duplicates,
              losses=check.losses + final.losses, note="literal in the topic, the history and the plugin's API")
    assert check.exact, check
    assert final.exact, final
    arrived = {next(csv.reader([m.value().decode()]))[2] for m in read_topic(kafka_bootstrap, topic)}
    assert arrived == set(categories), "a category did not arrive literally"

    # The database holds them as data: every table is still there, the rows say what was written.
    engine = db.get_engine(settings.db_url)
    assert {"ingest_files", "quarantined_rows", "training_runs", "batch_metrics", "checkpoints"} <= set(
        inspect(engine).get_table_names())
    (q,) = _quarantine(settings.db_url)
    assert q.file_name == str(nasty_file) and q.field == "shop_type" and "<svg onload=alert(1)>" in q.reason
    assert all(c in q.reason for c in NASTY)  # the reason lists the declared categories, as they are
    (letter,) = [json.loads(m.value()) for m in read_topic(kafka_bootstrap, settings.dlq_topic)]
    assert letter["file"] == str(nasty_file) and "<svg onload=alert(1)>" in letter["raw"]
    with db.session_factory(settings.db_url)() as s:
        assert {r.model_name for r in s.scalars(select(db.TrainingRun))} == {NASTY_MODEL}

    # ... and so does the UI plugin's JSON API.
    from fastapi.testclient import TestClient

    monkeypatch.syspath_prepend(str(PROJECT / "plugins"))
    from model_accuracy import app as plugin

    monkeypatch.setenv("RETRAIN_DB_URL", settings.db_url)
    monkeypatch.setenv("RETRAIN_TOPIC", topic)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    plugin.app.dependency_overrides[plugin.authorize] = lambda: None
    try:
        client = TestClient(plugin.app)
        models = client.get("/api/models")
        assert models.headers["content-type"].startswith("application/json")
        assert models.json()["models"] == [{"model_name": NASTY_MODEL, "batches": 7}]
        curve = client.get("/api/accuracy", params={"model": NASTY_MODEL}).json()
        assert curve["model_name"] == NASTY_MODEL and curve["total_batches"] == 7
        runs = client.get("/api/runs", params={"model": NASTY_MODEL}).json()
        assert runs["total"] == 2 and {r["model_name"] for r in runs["runs"]} == {NASTY_MODEL}
        ledger = client.get("/api/ingest").json()
        assert {f["path"] for f in ledger["files"]} == {str(nasty_file), str(landing / "observations_2026-01-06.csv")}
        assert NASTY_FILE in {f["file"] for f in ledger["files"]}
    finally:
        plugin.app.dependency_overrides.clear()
