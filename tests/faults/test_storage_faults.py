"""The history database going away during training, and damaged checkpoint files.

Database: by design the trainer writes the checkpoint *before* the history rows (the checkpoint carries them, and
the next run writes them), so a database outage can leave a newer checkpoint than the history. What must hold is
that no offset is committed to the consumer group past what the history and the checkpoint agree on, and that
after recovery the history is complete and exactly once. (Read-only SQLite files cannot stand in for the outage:
the tests run as root, which ignores file modes; a private PostgreSQL server that is stopped mid-run can.)
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy.exc import DBAPIError

from include.ingest.interval import ingest_files
from tests.faults.helpers import (
    check_history,
    check_topic,
    check_training,
    committed,
    drone_rows,
    durable_state,
    env_for,
    newest_checkpoint,
    settings_for,
    train_in_process,
    unique,
    write_csv,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_database_down_during_training_commits_no_offset_past_the_history(tmp_path, kafka_bootstrap, topic, pg,
                                                                          fault_row):
    url = pg.create_database(unique("retrain").replace("-", "_"))
    env = env_for(tmp_path / "state", kafka_bootstrap, topic, RETRAIN_DB_URL=url)
    settings = settings_for(env)
    rows = drone_rows(1200)
    ingest_files([write_csv(tmp_path / "landing" / "observations_2026-01-05.csv", rows)], settings=settings)
    data = check_topic(kafka_bootstrap, topic, rows)

    # Down before the run starts: it fails at once and changes nothing.
    pg.stop()
    with pytest.raises(DBAPIError):
        train_in_process(env)
    assert newest_checkpoint(env) is None
    assert committed(kafka_bootstrap, settings.consumer_group, topic) == {0: None}
    pg.start()

    # Down in the middle: two checkpoints are durable (history and offsets at 400), the third chunk is trained,
    # then the server dies; the run writes checkpoint 600 (carrying its history rows) and fails on the history.
    with pytest.raises(DBAPIError):
        train_in_process(env, {"train_after_step": lambda n: pg.stop() if n == 3 else None})
    assert newest_checkpoint(env).meta["offsets"] == {"0": 600}
    assert committed(kafka_bootstrap, settings.consumer_group, topic) == {0: 400}
    pg.start()
    state = durable_state(env, data.offsets[0])
    assert (state.group, state.history_end, state.checkpoint) == (400, 400, 600)
    assert not state.problems, state.problems

    # Recovery: the next run writes the history the checkpoint carries, commits 600 and trains on.
    summary = train_in_process(env)
    assert summary.offsets_from == {"0": 600}
    final = check_training(settings.db_url, data.offsets)
    fault_row("history database (PostgreSQL) stopped before and during training", runs=3, produced=len(rows),
              in_topic=data.in_topic, trained=final.trained, duplicates=final.duplicates + data.duplicates,
              losses=final.losses + data.losses,
              note=f"after the failed run: {state} (it carries rows {state.history_end}-{state.checkpoint}; "
                   "the next run wrote them)")
    assert final.exact and final.rows == 12, final
    check_history(env)  # includes: the failed run is no longer 'running'


def test_damaged_newest_checkpoints_and_a_stale_temp_file_resume_from_the_newest_valid(tmp_path, kafka_bootstrap,
                                                                                      topic, fault_row):
    env = env_for(tmp_path / "state", kafka_bootstrap, topic)
    settings = settings_for(env)
    rows = drone_rows(1600)
    ingest_files([write_csv(tmp_path / "landing" / "observations_2026-01-05.csv", rows)], settings=settings)
    data = check_topic(kafka_bootstrap, topic, rows)
    first = train_in_process(env, max_records=1000)  # checkpoints at 200 ... 1000; the newest three are kept
    folder = settings.checkpoint_dir / "default"
    bundles = sorted(folder.glob("ckpt-*.bundle"))
    offsets = {p: newest_checkpoint_of(p) for p in bundles}
    newest, second, valid = bundles[-1], bundles[-2], bundles[-3]
    assert len(bundles) == 3 and offsets[newest] == 1000 and offsets[valid] < 1000, offsets
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated
    damaged = bytearray(second.read_bytes())
    for i in range(len(damaged) // 3, len(damaged) // 3 + 64):  # flipped bytes inside the model member
        damaged[i] ^= 0xFF
    second.write_bytes(bytes(damaged))
    # A bundle that got its final name without its content, and a temp file a crashed save left behind.
    garbage = folder / f"ckpt-{99:08d}-{uuid.uuid4().hex}.bundle"
    garbage.write_bytes(os.urandom(4096))
    stale = folder / f".ckpt-{10:08d}-{uuid.uuid4().hex}.bundle.tmp"
    stale.write_bytes(os.urandom(4096))
    os.utime(stale, (1_000_000_000, 1_000_000_000))

    summary = train_in_process(env)
    assert summary.checkpoint_from == valid.name.split("-")[2].split(".")[0]
    # To the end: past the 1,600 records and the commit marker after them.
    assert summary.offsets_from == {"0": offsets[valid]} and summary.offsets_to == {"0": 1601}
    assert not stale.exists(), "the stale temp file was not cleaned"
    final = check_training(settings.db_url, data.offsets)
    fault_row("newest checkpoints truncated / corrupted, a garbage bundle and a stale temp file", runs=2,
              produced=len(rows), in_topic=data.in_topic, trained=final.trained,
              duplicates=final.duplicates + data.duplicates, losses=final.losses + data.losses,
              note=f"resumed from {offsets[valid]}, not {first.offsets_to['0']}")
    assert final.exact and final.rows == 16, final  # 600-1000 retrained: their rows replaced, not added
    check_history(env)


def newest_checkpoint_of(path) -> int:
    from include.training.checkpoint import _read_bundle

    seq, checkpoint_id = path.name.split("-")[1], path.name.split("-")[2].split(".")[0]
    meta, _ = _read_bundle(path, int(seq), checkpoint_id)
    return meta["offsets"]["0"]
