"""``python -m include predict`` as a real process on real versions: it refuses exactly the rows ingest refuses,
with ingest's reports, and scores the rest with the version asked for (or the champion), as CSV or JSON lines."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from include.ingest.validate import RowError, ValidRow, iter_rows
from include.schema import load_schema
from include.schema.values import field_count_reason
from tests.serving import MODEL, make_versions
from tests.support import PROJECT, process_env

pytestmark = pytest.mark.integration

SCHEMA = load_schema("drone")
LABEL = SCHEMA.label_index


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    return make_versions(tmp_path_factory.mktemp("predict"))


def _records(versions) -> list[bytes]:
    """Records (no line end) for a labelled file: good rows with every kind of bad row between them."""
    good = versions.csv.read_text().splitlines()[1:]
    t, shop, kind, x, y, busy = good[0].split(",")
    bad = [
        f"{t},{shop},{kind},25,{y},{busy}",                      # above max
        f"{t},{shop},bakery,{x},{y},{busy}",                     # unknown category
        f"2026-13-05T00:00:00Z,{shop},{kind},{x},{y},{busy}",    # no such date
        f"{t},abc,{kind},{x},{y},{busy}",                        # not an int
        f"{t},{shop},{kind},{x},{y},{busy},extra",               # too many fields
        f"{t},{shop},{kind},{x}",                                # too few
        "",                                                      # empty line
        f'"{t}",{shop},"{kind}",{x},{y},{busy}',                 # quoted: valid
        f"{t},{shop},{kind},{x},-1,{busy}",                      # below min
        f"{t},{shop},{kind},{x},{y},{busy}\r",                   # CRLF: valid
    ]
    records = [line.encode() for line in good[:40]]
    for k, line in enumerate(bad):
        records.insert(3 + 4 * k, line.encode())
    records.insert(20, f"{t},{shop},caf\xe9".encode("latin-1") + f",{x},{y},{busy}".encode())  # invalid UTF-8
    records.append(f'{t},{shop},"{kind},{x},{y},{busy}'.encode())  # a quote never closed, at the end
    return records


def _label_free(record: bytes) -> bytes:
    """The record without its label field (the last one in the drone schema)."""
    cut = record.rstrip(b"\r").rfind(b",")
    return record if cut < 0 else record[:cut] + record[len(record.rstrip(b"\r")):]


def _write(path, header: str, records: list[bytes]):
    path.write_bytes(header.encode() + b"\n" + b"\n".join(records) + b"\n")
    return path


def _predict(versions, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "include", "predict", *args], input=stdin, capture_output=True,
                          env=process_env(versions.env), cwd=PROJECT, timeout=300)


def _ingest_verdict(path) -> tuple[list[ValidRow], list[dict]]:
    items = list(iter_rows(path, SCHEMA))
    return ([i for i in items if isinstance(i, ValidRow)], [i.as_dict() for i in items if isinstance(i, RowError)])


def _check_scores(versions, version: int, valid: list[ValidRow], scored: list[dict]) -> None:
    assert [int(s["line"]) for s in scored] == [r.line for r in valid]
    expected = versions.probabilities(version, [r.text for r in valid])
    got = np.array([float(s["probability"]) for s in scored])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert [int(s["predicted"]) for s in scored] == [int(p >= 0.5) for p in got]


def test_refuses_exactly_the_rows_ingest_refuses_with_its_reports(versions, tmp_path):
    path = _write(tmp_path / "mixed.csv", SCHEMA.header_line(), _records(versions))
    valid, refused = _ingest_verdict(path)
    assert len(refused) >= 10 and len(valid) >= 40  # the file holds both kinds

    out, errors = tmp_path / "scored.jsonl", tmp_path / "refused.jsonl"
    result = _predict(versions, str(path), "--format", "jsonl", "--output", str(out), "--errors", str(errors))

    assert result.returncode == 1, result.stderr.decode()[-3000:]  # 1: some rows were refused
    assert [json.loads(line) for line in errors.read_text().splitlines()] == refused
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    _check_scores(versions, 1, valid, scored)
    assert [tuple(s[name] for name in SCHEMA.names) for s in scored] == [r.fields for r in valid]
    summary = result.stderr.decode().strip().splitlines()[-1]
    assert f"{len(valid)} rows scored, {len(refused)} refused" in summary and "version 1" in summary


def test_label_free_rows_on_stdin_as_csv_with_a_version(versions, tmp_path):
    records = _records(versions)
    labelled = _write(tmp_path / "labelled.csv", SCHEMA.header_line(), records)
    free_header = ",".join(n for n in SCHEMA.names if n != SCHEMA.label)
    data = _write(tmp_path / "free.csv", free_header, [_label_free(r) for r in records]).read_bytes()
    valid, refused = _ingest_verdict(labelled)  # what ingest says about the same rows with their labels

    result = _predict(versions, "-", "--version", "2", "--format", "csv", stdin=data)

    assert result.returncode == 1
    rows = list(csv.DictReader(io.StringIO(result.stdout.decode())))
    assert list(rows[0]) == ["line", *SCHEMA.names[:LABEL], *SCHEMA.names[LABEL + 1:], "probability", "predicted"]
    _check_scores(versions, 2, valid, rows)
    lines = result.stderr.decode().strip().splitlines()
    reported = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(e["line"], e["field"], e["file"]) for e in reported] == [(e["line"], e["field"], "<stdin>")
                                                                      for e in refused]
    for got, want in zip(reported, refused):
        if want["reason"].startswith("expected "):  # a field count: one fewer on both sides without the label
            found = int(want["reason"].rsplit(" ", 1)[-1])
            assert got["reason"] == field_count_reason(len(SCHEMA.columns) - 1, found - 1)
        else:
            assert got["reason"] == want["reason"]
    assert f"{len(valid)} rows scored, {len(refused)} refused" in lines[-1] and "version 2" in lines[-1]


def test_the_champion_is_used_unless_a_version_is_given(versions, tmp_path):
    from include.lifecycle.promotion import promote, rollback

    rows = versions.csv.read_text().splitlines()[:101]
    path = tmp_path / "clean.csv"
    path.write_text("\n".join(rows) + "\n")
    registry = versions.registry()
    promote(registry, MODEL, 3, actor="test", reason="serve version 3")
    try:
        result = _predict(versions, str(path), "--format", "jsonl")
    finally:
        rollback(registry, MODEL, actor="test", reason="back to version 1")
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert "100 rows scored, 0 refused" in result.stderr.decode() and "version 3" in result.stderr.decode()
    valid, _ = _ingest_verdict(path)
    _check_scores(versions, 3, valid, [json.loads(line) for line in result.stdout.decode().splitlines()])


@pytest.mark.parametrize("args, message", [
    (("--version", "9"), "error: model 'default' has no version 9"),
    (("--model-name", "other"), "error: model 'other' has no champion yet"),
])
def test_what_cannot_be_scored_is_one_error_line(versions, args, message):
    result = _predict(versions, str(versions.csv), *args)
    assert result.returncode == 6  # the lifecycle's errors, as for `python -m include models`
    assert result.stderr.decode().strip().splitlines()[-1].startswith(message)
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("data, message", [
    (b"a,b,c\n1,2,3\n", "error: <stdin>: expected the header 'observed_at,shop_id,shop_type,x,y,busy' or, without "
                         "the label, 'observed_at,shop_id,shop_type,x,y'; found 'a,b,c'"),
    (b"", "error: <stdin>: file is empty; expected the header 'observed_at,shop_id,shop_type,x,y,busy'"),
])
def test_input_of_another_layout_is_one_error_line(versions, data, message):
    result = _predict(versions, "-", stdin=data)
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert result.stderr.decode().strip().splitlines()[-1] == message


def test_make_run_ends_with_how_to_score_rows_with_the_champion(versions):
    from include.demo.main_job import scoring_lines
    from include.serving.requests import decode_requests, instance_rows

    settings = versions.settings.with_overrides(landing_dir=str(versions.csv.parent))
    text = scoring_lines(settings)
    champion = versions.registry().champion_version(MODEL)
    assert f"Champion:   model 'default', version {champion}" in text
    assert f"python -m include predict {versions.csv}" in text
    curl = next(line for line in text.splitlines() if "curl" in line)
    assert f"http://{settings.serve_host}:{settings.serve_port}/v1/models/default:predict" in curl
    body = json.loads(curl.split(" -d ", 1)[1].strip("'"))
    rows, refused = instance_rows(SCHEMA, body["instances"])
    assert refused == [] and decode_requests(SCHEMA, rows).errors == []  # the printed request is one serve scores


def test_an_output_that_is_the_input_is_refused_before_anything_is_written(versions, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(versions.csv.read_bytes())
    result = _predict(versions, str(path), "--output", str(path))
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines()[-1] == \
        f"error: {path} is the input file: writing it would destroy the rows being read"
    assert path.read_bytes() == versions.csv.read_bytes()
